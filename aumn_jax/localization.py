"""Localization: class activation sequences -> scored action proposals in seconds (SPEC.md §5).

Host-side NumPy; never imports jax. `localize_video` turns one video's CAS (softmax over C+1,
background last, valid snippets only) and video scores into ActivityNet-style proposals
`{"label", "score", "segment": [start_s, end_s]}`; `localize` does it for a split and returns
the `{video_id: [...]}` results dict, which `aumn_jax.formats.write_proposals` writes: the
one definition of the proposals JSON format (this module deliberately does not know that
format, nor how proposals are scored). Every number
comes from `config.localization`.

What is thresholded is `snippet_scores(cas_probs, fg, config.localization.score)`: SPEC's
p'_c ('class'), the foreground attention ('actionness'), or by default sqrt(p'(c | action) · a)
('class_x_actionness', docs/method.md §7); below, "CAS" is that sequence.

Pipeline per video (BaS-Net's post-processing, vectorized):
  1. Video classes: action columns c < C with p_c >= class_threshold, else the top-1 action.
     The background column is never a class.
  2. Per class, upsample the CAS by `scale` (linear interpolation).
  3. Threshold it at every value of `thresholds` at once ([K, n_thr, T*scale] booleans) and
     take the runs of consecutive samples >= threshold (the edges of the padded mask).
  4. Score each run with the outer-inner contrast (cumulative sums) plus gamma * p_c.
  5. Convert to seconds, clip to [0, duration], per-class NMS or soft-NMS, then keep the
     `max_proposals` highest-scoring proposals of the video.
Speed (benchmarks/localization.py, one CPU core): the 212 THUMOS14 test videos (71,903
snippets, scale 24, 17 thresholds) localize in 0.2-1.5 s, NMS or soft-NMS.

Decisions where SPEC / BaS-Net leave room (each is tested in tests/localization_test.py):
* Time axis. Snippet i covers [i, i+1) * stride / fps seconds and its CAS value sits at its
  centre. Upsampled sample j covers [j, j+1) * stride / (fps * scale) and takes the CAS
  linearly interpolated at its own centre, snippet coordinate (j + 0.5) / scale - 0.5; before
  the first / after the last snippet centre the value is held (np.interp), never extrapolated,
  so it stays a probability. A run of samples [a, b) is the segment
  [a, b) * stride / (fps * scale); with scale = 1 that is exactly the snippets' coverage.
  (BaS-Net's interp1d puts snippet i's value at time i * stride / fps, half a snippet early.)
* A sample is "above" a threshold when p >= threshold. Thresholds must lie in (0, 1]: a
  softmax is positive everywhere, so 0 would give one proposal covering the whole video.
* Outer-inner contrast of a run of length L samples: inner = its mean; the outer region is
  m = ceil(outer_ratio * L) samples on each side (so a 1-sample run still has neighbours),
  clipped at the video ends; outer = the mean over the outer samples that exist (one side only
  at a video end). When no outer sample exists (the run spans the whole video, or
  outer_ratio = 0) outer = 0, as in BaS-Net: such a proposal is scored by its inner mean.
* The same run found at several thresholds is one proposal (its score is a function of the
  run alone, so the copies would only crowd the max_proposals budget under soft-NMS).
* NMS runs on the segments the evaluator will see (seconds, clipped to the duration); a
  proposal that clipping leaves empty (it starts at or after `duration`, possible when the
  feature extractor padded the last snippet) is dropped. Hard NMS suppresses tIoU > nms_iou.
* Soft-NMS is Gaussian over every overlap, w = exp(-tIoU^2 / soft_nms_sigma), and ignores
  nms_iou. OIC scores can be negative, and multiplying a negative score by w would raise it;
  the decay is s <- s - (1 - w) * |s|, which is s * w for the usual positive score and lowers
  a negative one by the same fraction. Soft-NMS keeps every proposal (no score floor): the
  max_proposals cut bounds the output.
* Both NMS variants stop once a class has max_proposals keepers: a later keeper scores no
  higher than every earlier one, so it could never survive the per-video cut.
"""
import math
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np


def select_classes(video_probs: np.ndarray, num_classes: int,
                   class_threshold: float) -> np.ndarray:
  """Indices of the video's classes: action columns with p >= class_threshold, else top-1.

  Args:
    video_probs: [C+1] video-level probabilities, background last (or [C]).
    num_classes: C, the number of action columns (the background column is ignored).
    class_threshold: minimum probability of a detected class.

  Returns:
    int64 [K] ascending class indices, K >= 1.
  """
  actions = np.asarray(video_probs, np.float64)[:num_classes]
  classes = np.flatnonzero(actions >= class_threshold)
  if classes.size == 0:
    classes = np.array([int(np.argmax(actions))])
  return classes.astype(np.int64)


def upsample(cas_TxK: np.ndarray, scale: int) -> np.ndarray:
  """Linear upsampling along time: [T, K] -> [T * scale, K] (module docstring: time axis)."""
  cas_TxK = np.asarray(cas_TxK, np.float64)
  t = cas_TxK.shape[0]
  if scale == 1:
    return cas_TxK.copy()
  x = (np.arange(t * scale) + 0.5) / scale - 0.5
  xp = np.arange(t)
  return np.stack([np.interp(x, xp, col) for col in cas_TxK.T], axis=1)


def find_runs(cas_KxN: np.ndarray, thresholds: Sequence[float]):
  """Maximal runs of samples >= threshold, for every class row and threshold at once.

  Args:
    cas_KxN: [K, N] per-class activation sequences.
    thresholds: n_thr values.

  Returns:
    (row, start, end) int64 arrays: run [start, end) of row `row`, one per distinct
    (row, start, end), sorted by row, then start, then end.
  """
  cas_KxN = np.asarray(cas_KxN)
  k, n = cas_KxN.shape
  thr = np.asarray(thresholds, np.float64)
  above = np.zeros((k, thr.size, n + 2), bool)  # [K, n_thr, N], one False each end
  np.greater_equal(cas_KxN[:, None, :], thr[None, :, None], out=above[:, :, 1:-1])
  # Edge e between padded samples e and e+1 is a rise (run starts at sample e) or a fall
  # (run ends before sample e). Each padded row begins and ends False, so in row-major
  # order the edges alternate rise, fall, rise, ...: pair them without looking at signs.
  edges = np.flatnonzero(above[:, :, 1:] != above[:, :, :-1])
  pos, row = edges % (n + 1), edges // ((n + 1) * thr.size)
  row, start, end = row[0::2], pos[0::2], pos[1::2]
  key = (row * (n + 1) + start) * (n + 1) + end
  _, first = np.unique(key, return_index=True)
  return row[first], start[first], end[first]


def outer_inner_contrast(cas_KxN: np.ndarray, row: np.ndarray, start: np.ndarray,
                         end: np.ndarray, outer_ratio: float) -> np.ndarray:
  """inner mean - outer mean of runs [start, end) of rows `row` (module docstring).

  Returns:
    float64 [P] contrast scores (gamma * p_c not included).
  """
  cas_KxN = np.asarray(cas_KxN, np.float64)
  n = cas_KxN.shape[1]
  csum = np.zeros((cas_KxN.shape[0], n + 1))
  np.cumsum(cas_KxN, axis=1, out=csum[:, 1:])
  length = end - start
  inner = (csum[row, end] - csum[row, start]) / length
  # The epsilon keeps float noise (0.1 * 30 = 3.0000000000000004) from adding a sample.
  margin = np.ceil(outer_ratio * length - 1e-9).astype(np.int64)
  outer_start = np.maximum(start - margin, 0)
  outer_end = np.minimum(end + margin, n)
  outer_n = (start - outer_start) + (outer_end - end)
  outer_sum = (csum[row, start] - csum[row, outer_start]
               + csum[row, outer_end] - csum[row, end])
  outer = np.where(outer_n > 0, outer_sum / np.maximum(outer_n, 1), 0.0)
  return inner - outer


def segment_iou(segment: np.ndarray, segments: np.ndarray) -> np.ndarray:
  """tIoU of one [2] segment with each of [P, 2] segments (positive lengths)."""
  inter = np.maximum(np.minimum(segment[1], segments[:, 1])
                     - np.maximum(segment[0], segments[:, 0]), 0.0)
  union = (segment[1] - segment[0]) + (segments[:, 1] - segments[:, 0]) - inter
  return inter / union


def nms(segments: np.ndarray, scores: np.ndarray, iou_threshold: float,
        max_keep: int) -> np.ndarray:
  """Greedy NMS: indices of kept segments, best first; suppresses tIoU > iou_threshold."""
  order = np.argsort(-scores, kind='stable')
  keep = []
  while order.size and len(keep) < max_keep:
    best, order = order[0], order[1:]
    keep.append(best)
    order = order[segment_iou(segments[best], segments[order]) <= iou_threshold]
  return np.asarray(keep, np.int64)


def soft_nms(segments: np.ndarray, scores: np.ndarray, sigma: float,
             max_keep: int) -> tuple[np.ndarray, np.ndarray]:
  """Gaussian soft-NMS (module docstring): (indices, decayed scores), best first."""
  scores = np.asarray(scores, np.float64).copy()
  alive = np.ones(scores.size, bool)
  keep, kept_scores = [], []
  for _ in range(min(scores.size, max_keep)):
    best = int(np.argmax(np.where(alive, scores, -np.inf)))
    keep.append(best)
    kept_scores.append(scores[best])
    alive[best] = False
    w = np.exp(-segment_iou(segments[best], segments) ** 2 / sigma)
    scores = np.where(alive, scores - (1.0 - w) * np.abs(scores), scores)
  return np.asarray(keep, np.int64), np.asarray(kept_scores, np.float64)


SCORES = ('class', 'actionness', 'class_x_actionness')


def snippet_scores(cas_probs: np.ndarray, fg: np.ndarray, score: str) -> np.ndarray:
  """What the proposals are cut from: [T, C+1] per-snippet scores in [0, 1] of one video.

  The layout is cas_probs' (background column last, carried along but never thresholded), so
  `localize_video` takes the result in cas_probs' place. `score` (config localization.score):
    'class'               p'_c(t), the suppressed branch's softmax (SPEC §5, BaS-Net): one
                          distribution does both jobs, "is this an action" and "which one".
    'actionness'          a_t, the foreground attention, the same sequence for every class of
                          the video (UM's magnitude proposals, CO2-Net's attention proposals).
    'class_x_actionness'  sqrt(p'(c | action, t) * a_t) with p'(c | action) = p'_c / (1 - p'_bg):
                          a_t says where an action is, the class distribution among actions
                          says which; the square root keeps thresholds on a's scale (a video
                          of one class, p'(c | action) = 1, thresholds sqrt(a)).
  Evidence for the default: docs/method.md §7 (localization).

  Args:
    cas_probs: [T, C+1] softmax over C+1, background last.
    fg: [T] foreground attention a in [0, 1].
    score: one of SCORES.
  """
  cas_probs = np.asarray(cas_probs, np.float64)
  fg = np.asarray(fg, np.float64)
  if score == 'class':
    return cas_probs
  if fg.shape != cas_probs.shape[:1]:
    raise ValueError(f'fg has shape {fg.shape}; expected [{cas_probs.shape[0]}] (one a per '
                     'snippet of cas_probs)')
  background = cas_probs[:, -1:]
  if score == 'actionness':
    actions = np.repeat(fg[:, None], cas_probs.shape[1] - 1, axis=1)
  elif score == 'class_x_actionness':
    given_action = cas_probs[:, :-1] / np.maximum(1.0 - background, 1e-12)
    actions = np.sqrt(np.clip(given_action, 0.0, 1.0) * fg[:, None])
  else:
    raise ValueError(f'localization.score={score!r}: must be one of {SCORES}')
  return np.concatenate([actions, background], axis=1)


def check_config(cfg: Any) -> None:
  """Raises ValueError naming the `localization.*` field that is out of range."""
  def fail(key, why):
    raise ValueError(f'config localization.{key}={getattr(cfg, key)!r}: {why}')
  if cfg.score not in SCORES:
    fail('score', f'must be one of {", ".join(SCORES)}')
  if not 0.0 <= cfg.class_threshold <= 1.0:
    fail('class_threshold', 'must be in [0, 1]')
  if isinstance(cfg.scale, bool) or int(cfg.scale) != cfg.scale or cfg.scale < 1:
    fail('scale', 'must be a positive integer')
  thr = np.asarray(cfg.thresholds, np.float64)
  if thr.ndim != 1 or thr.size == 0 or not np.all((thr > 0) & (thr <= 1)):
    fail('thresholds', 'must be a non-empty list of values in (0, 1] '
         '(a softmax is positive everywhere: 0 selects the whole video)')
  if not cfg.outer_ratio >= 0:
    fail('outer_ratio', 'must be >= 0')
  if not math.isfinite(cfg.gamma):
    fail('gamma', 'must be finite')
  if cfg.nms not in ('nms', 'soft_nms'):
    fail('nms', "must be 'nms' or 'soft_nms'")
  if not 0 < cfg.nms_iou <= 1:
    fail('nms_iou', 'must be in (0, 1]')
  if not cfg.soft_nms_sigma > 0:
    fail('soft_nms_sigma', 'must be > 0')
  if isinstance(cfg.max_proposals, bool) or int(cfg.max_proposals) != cfg.max_proposals \
      or cfg.max_proposals < 1:
    fail('max_proposals', 'must be a positive integer')


def localize_video(cas_probs: np.ndarray, video_probs: np.ndarray, *, fps: float,
                   snippet_stride: int, duration: float, cfg: Any,
                   class_names: Sequence[str]) -> list[dict[str, Any]]:
  """Proposals of one video, highest score first.

  Args:
    cas_probs: [T, C+1] snippet class probabilities (softmax over C+1, background last),
      valid snippets only.
    video_probs: [C+1] video-level probabilities (background last).
    fps: feature frame rate of this video.
    snippet_stride: frames per snippet; snippet i covers [i, i+1) * stride / fps seconds.
    duration: video length in seconds; segments are clipped to [0, duration].
    cfg: `config.localization` (or any object with its attribute names).
    class_names: the C action class names, in column order.

  Returns:
    At most cfg.max_proposals dicts {"label": str, "score": float, "segment": [s, e]}.
  """
  check_config(cfg)
  num_classes = len(class_names)
  cas_probs = np.asarray(cas_probs, np.float64)
  video_probs = np.asarray(video_probs, np.float64)
  if cas_probs.ndim != 2 or cas_probs.shape[0] < 1 or cas_probs.shape[1] != num_classes + 1:
    raise ValueError(f'cas_probs has shape {cas_probs.shape}; expected [T >= 1, '
                     f'{num_classes + 1}] ({num_classes} classes + background)')
  if video_probs.shape != (num_classes + 1,):
    raise ValueError(f'video_probs has shape {video_probs.shape}; '
                     f'expected [{num_classes + 1}]')
  if not (np.all(np.isfinite(cas_probs)) and np.all(np.isfinite(video_probs))):
    raise ValueError('cas_probs / video_probs contain NaN or Inf')
  if not (fps > 0 and snippet_stride > 0 and duration > 0):
    raise ValueError(f'need fps > 0, snippet_stride > 0, duration > 0; got fps={fps}, '
                     f'snippet_stride={snippet_stride}, duration={duration}')

  scale = int(cfg.scale)
  classes = select_classes(video_probs, num_classes, cfg.class_threshold)
  cas_KxN = upsample(cas_probs[:, classes], scale).T
  row, start, end = find_runs(cas_KxN, cfg.thresholds)
  scores = (outer_inner_contrast(cas_KxN, row, start, end, cfg.outer_ratio)
            + cfg.gamma * video_probs[classes[row]])
  seconds_per_sample = snippet_stride / (fps * scale)
  segments = np.minimum(np.stack([start, end], axis=1) * seconds_per_sample, duration)
  nonempty = segments[:, 1] > segments[:, 0]
  row, segments, scores = row[nonempty], segments[nonempty], scores[nonempty]

  max_keep = int(cfg.max_proposals)
  kept_rows, kept_segments, kept_scores = [], [], []
  for k in range(classes.size):
    idx = np.flatnonzero(row == k)
    if not idx.size:
      continue
    if cfg.nms == 'nms':
      keep = nms(segments[idx], scores[idx], cfg.nms_iou, max_keep)
      keep_scores = scores[idx][keep]
    else:
      keep, keep_scores = soft_nms(segments[idx], scores[idx], cfg.soft_nms_sigma, max_keep)
    kept_rows.append(np.full(keep.size, k))
    kept_segments.append(segments[idx][keep])
    kept_scores.append(keep_scores)
  if not kept_rows:
    return []
  rows = np.concatenate(kept_rows)
  segs = np.concatenate(kept_segments)
  scrs = np.concatenate(kept_scores)
  top = np.argsort(-scrs, kind='stable')[:max_keep]
  return [{'label': class_names[classes[rows[i]]], 'score': float(scrs[i]),
           'segment': [float(segs[i, 0]), float(segs[i, 1])]} for i in top]


class VideoScores(NamedTuple):
  """One video's input to `localize`: what `localize_video` takes, named."""
  video_id: str
  cas_probs: np.ndarray     # [T, C+1] per-snippet scores (snippet_scores)
  video_probs: np.ndarray   # [C+1] video-level class probabilities
  fps: float
  snippet_stride: int       # frames per snippet
  duration: float           # seconds


def localize(videos: Iterable[VideoScores], cfg: Any,
             class_names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
  """Localizes a split.

  Args:
    videos: a VideoScores per video.
    cfg: `config.localization`.
    class_names: the C action class names.

  Returns:
    {video_id: localize_video(...)}, the results dict `formats.write_proposals` exports.
  """
  results = {}
  for v in videos:
    if v.video_id in results:
      raise ValueError(f'video {v.video_id!r} appears twice')
    try:
      results[v.video_id] = localize_video(
          v.cas_probs, v.video_probs, fps=v.fps, snippet_stride=v.snippet_stride,
          duration=v.duration, cfg=cfg, class_names=class_names)
    except ValueError as e:
      raise ValueError(f'video {v.video_id!r}: {e}') from None
  return results
