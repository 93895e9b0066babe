"""Localization mAP from exported proposals, exact to the ActivityNet protocol (SPEC.md §6).

Holds: the proposals JSON format (`validate_results` / `write_proposals` / `load_proposals`, the one
definition the localization code exports through), the ground-truth reader (`load_ground_truth`,
ActivityNet-style gt.json), THUMOS14's ambiguous-segment list (`load_ambiguous`), the protocol
presets (`THUMOS14`, `ACTIVITYNET`), the metric (`compute` -> `Evaluation`, `evaluate` -> dict)
and the printed table (`format_table`). NumPy only: it never imports jax, so scoring a proposals
file needs no accelerator stack.
Deliberately does not hold: localization (CAS -> proposals, aumn_jax/localization.py), the CLI
(evaluate.py), proposal-recall (AR@AN) metrics, the W-TALC evaluator's snippet-unit arithmetic.

The protocol, as ActivityNet's `ANETdetection` / `compute_average_precision_detection` compute it:
  * classes = labels with ground truth in the evaluated subset (order of first appearance, which is
    the order `map` averages over); a prediction with another label is an error (the official code
    raises KeyError) unless `drop_unknown_labels`;
  * per class, predictions are processed by descending score; at each tIoU threshold t a
    prediction is a true positive iff some not-yet-matched ground truth of its video and class has
    tIoU >= t, and it then takes the unmatched one with the highest tIoU (each ground truth matched
    at most once per threshold); a prediction on a video without ground truth is a false positive;
  * AP = VOC-2011 interpolated AP: precision envelope (running max from the right) summed over the
    recall steps; a class without predictions has AP 0; mAP = mean over classes; average_map =
    mean over thresholds.
On inputs without ties (equal scores, equal tIoUs) or zero-length segments the numbers are
bit-identical to the official code: tests check this against a transcription of it. Where the
official code is not well defined we chose:
  * Ties. It orders predictions with `argsort()[::-1]` on the score and ground truths with
    `argsort()[::-1]` on the tIoU, numpy's unstable quicksort, so tied inputs give machine-dependent
    results. Here: equal scores keep file order (videos in the order of the results object, then
    list order; a stable descending sort), and among ground truths with equal tIoU the one earlier
    in the ground-truth file is tried first.
  * Zero-length segments. tIoU = intersection / union with union = len(p) + len(g) - intersection,
    as the official `segment_iou`; when the intersection has no positive length the tIoU is 0, also
    for two zero-length segments (0/0, where the official code gets NaN, which its `tiou < t` test
    then treats as a match).
  * Thresholds are used exactly as given (tIoU >= t). The presets are `np.linspace(0.1, 0.7, 7)`
    and `np.linspace(0.5, 0.95, 10)`, the values of the UM/BaS-Net/ACM-Net and ActivityNet code:
    ActivityNet's "0.9" is 0.8999999999999999, which a tIoU of 1.8/2.0 passes and 0.9 would not.
Optional W-TALC convention (`ambiguous=`): predictions whose segment overlaps (positive-length
intersection, in seconds) an ambiguous segment of the same video are dropped before scoring; the
W-TALC code tests the same overlap on rounded snippet indices. Off by default (ActivityNet/UM).

Speed: per class and threshold the official loop costs Python work per prediction. Here candidate
pairs come from one sorted interval join, and the greedy matching runs for all classes and videos
at once in rounds: a prediction's choice (its best unmatched candidate) is final as soon as no
earlier unresolved prediction still has that ground truth as a candidate, which is exactly
sequential greedy (proof in `_greedy_true_positives`); rounds are few because conflicts are local.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from aumn_jax import errors
from aumn_jax import files


class InputError(errors.UserError, ValueError):
  """Malformed input; str(error) is one line naming the file (or object) and the problem."""


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A benchmark's tIoU thresholds and the averages its papers report."""
  name: str
  tiou_thresholds: tuple[float, ...]
  averages: tuple[tuple[float, float], ...]   # inclusive [lo, hi] ranges of thresholds


THUMOS14 = Protocol(
    name='thumos14',
    tiou_thresholds=tuple(float(t) for t in np.linspace(0.1, 0.7, 7)),
    averages=((0.1, 0.5), (0.3, 0.7), (0.1, 0.7)))
ACTIVITYNET = Protocol(
    name='activitynet',
    tiou_thresholds=tuple(float(t) for t in np.linspace(0.5, 0.95, 10)),
    averages=((0.5, 0.95),))
PROTOCOLS = {p.name: p for p in (THUMOS14, ACTIVITYNET)}

# Numbers accepted in a segment or score. JSON gives int/float; the writer also sees NumPy scalars
# from the localization code. bool is an int subclass and is refused explicitly.
_NUMBER_TYPES = (int, float, np.integer, np.floating)


def _is_number_type(t: type) -> bool:
  return issubclass(t, _NUMBER_TYPES) and not issubclass(t, (bool, np.bool_))


# ---------------------------------------------------------------------------------------------
# Reading and writing JSON.


@contextlib.contextmanager
def _gc_paused():
  # A THUMOS proposals file parses into ~4 * 10^5 containers; while they are alive every
  # allocation-triggered cyclic-GC pass walks them again, which took longer than parsing and
  # validating together. Nothing here creates cycles: refcounting frees it all.
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _read_json(path: str | os.PathLike[str]) -> Any:
  name = os.fspath(path)
  try:
    with open(name, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise InputError(f'{name}: cannot read: {e.strerror or e}') from None
  try:
    return json.loads(raw)
  except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, >4300-digit integers
    raise InputError(f'{name}: not valid JSON: {e}') from None


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as JSON atomically (files.write_atomic): the old file or the whole new one.

  Raises InputError (one line) when the file cannot be written.
  """
  text = json.dumps(obj, allow_nan=False)
  try:
    files.write_atomic(path, text)
  except OSError as e:
    raise InputError(f'{os.fspath(path)}: cannot write: {e.strerror or e}') from None


# ---------------------------------------------------------------------------------------------
# Segments: one rule for ground truth, proposals and ambiguous segments.


def _segment_problem(seg: Any, *, strings: bool = True) -> str | None:
  """Why `seg` is not a valid [start, end] (None when it is). Mirrors `_segments_array`."""
  if not isinstance(seg, (list, tuple)) or len(seg) != 2:
    return f'must be a list [start, end], got {_short(seg)}'
  values = []
  for x in seg:
    if not (_is_number_type(type(x)) or (strings and isinstance(x, str))):
      return f'{_short(x)} is not a number'
    try:
      v = float(x)
    except (ValueError, OverflowError):
      return f'{_short(x)} is not a number'
    if not math.isfinite(v):
      return f'{_short(x)} is not finite'
    values.append(v)
  start, end = values
  if start < 0:
    return f'start {start!r} is negative'
  if end < start:
    return f'end {end!r} < start {start!r}'
  return None


def _short(x: Any, limit: int = 60) -> str:
  r = repr(x)
  return r if len(r) <= limit else r[:limit - 3] + '...'


def _segments_array(segs: Sequence[Any]) -> np.ndarray | None:
  """[M, 2] float64 of valid segments, or None if one is invalid (`_segment_problem` says why)."""
  m = len(segs)
  try:
    if m and (not all(issubclass(t, (list, tuple)) for t in set(map(type, segs)))
              or set(map(len, segs)) != {2}):
      return None
    flat = list(itertools.chain.from_iterable(segs))
    types = set(map(type, flat))
    if not all(_is_number_type(t) or issubclass(t, str) for t in types):
      return None
    has_str = any(issubclass(t, str) for t in types)
    out = np.fromiter(map(float, flat) if has_str else flat, np.float64,
                      count=2 * m).reshape(m, 2)
  except (TypeError, ValueError, OverflowError):
    return None
  with np.errstate(invalid='ignore'):
    ok = np.isfinite(out).all() and (out[:, 0] >= 0).all() and (out[:, 1] >= out[:, 0]).all()
  return out if ok else None


# ---------------------------------------------------------------------------------------------
# Ground truth.


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
  """Ground-truth segments of one subset, in file order.

  Attributes:
    subset: the subset these segments come from.
    class_names: classes with ground truth in the subset, in order of first appearance (the order
      the ActivityNet code indexes and averages them in).
    video_ids: all videos of the subset, in file order (also those without segments).
    video: int64 [N] index into video_ids per segment.
    label: int64 [N] index into class_names per segment.
    segments: float64 [N, 2] [start, end] in seconds.
    source: file name (or '<dict>') for messages.
  """
  subset: str
  class_names: tuple[str, ...]
  video_ids: tuple[str, ...]
  video: np.ndarray
  label: np.ndarray
  segments: np.ndarray
  source: str = '<dict>'

  def __len__(self) -> int:
    return len(self.label)


def load_ground_truth(source: str | os.PathLike[str] | Mapping[str, Any],
                      subset: str = 'test') -> GroundTruth:
  """Reads an ActivityNet-style ground truth: {"database": {video: {"subset", "annotations"}}}.

  Accepts the UM/BaS-Net file (string segments such as "18.6", only the key "database", no
  durations) and the ACM-Net/ActivityNet ones (floats, extra keys); only videos of `subset` are
  read and checked.

  Args:
    source: path of gt.json, or the already-parsed dict (e.g. `data.ground_truth(...)`).
    subset: value of the videos' "subset" field to evaluate.

  Returns:
    GroundTruth.

  Raises:
    InputError: unreadable/malformed file, missing keys, a bad segment or label, or no ground
      truth in `subset`.
  """
  with _gc_paused():
    return _load_ground_truth(source, subset)


def _top_level(source, key: str) -> tuple[Any, str]:
  """(data[key], name) of a JSON path or parsed dict; InputError unless it is an object with key."""
  if isinstance(source, Mapping):
    data, name = source, '<dict>'
  else:
    name = os.fspath(source)
    data = _read_json(name)
  if not isinstance(data, Mapping):
    raise InputError(f"{name}: top level must be a JSON object with key '{key}'")
  if key not in data:
    raise InputError(f"{name}: missing key '{key}'")
  return data[key], name


def _load_ground_truth(source, subset):
  database, name = _top_level(source, 'database')
  if not isinstance(database, Mapping):
    raise InputError(f"{name}: 'database' must be an object mapping video id to its entry")

  class_index: dict[str, int] = {}
  video_ids: list[str] = []
  video, label, segments = [], [], []
  subsets_seen = set()
  for vid, entry in database.items():
    where = f'{name}: database[{vid!r}]'
    if not isinstance(entry, Mapping):
      raise InputError(f"{where}: must be an object with keys 'subset' and 'annotations'")
    if 'subset' not in entry:
      raise InputError(f"{where}: missing key 'subset'")
    subsets_seen.add(str(entry['subset']))
    if entry['subset'] != subset:
      continue
    if 'annotations' not in entry:
      raise InputError(f"{where}: missing key 'annotations'")
    annotations = entry['annotations']
    if not isinstance(annotations, list):
      raise InputError(f"{where}['annotations']: must be a list")
    v = len(video_ids)
    video_ids.append(vid)
    for j, ann in enumerate(annotations):
      here = f"{where}['annotations'][{j}]"
      if not isinstance(ann, Mapping):
        raise InputError(f"{here}: must be an object with keys 'segment' and 'label'")
      for key in ('segment', 'label'):
        if key not in ann:
          raise InputError(f"{here}: missing key '{key}'")
      problem = _segment_problem(ann['segment'])
      if problem:
        raise InputError(f"{here}['segment']: {problem}")
      if not isinstance(ann['label'], str):
        label = ann['label']
        raise InputError(f"{here}['label']: must be a string, got {_short(label)}")
      video.append(v)
      label.append(class_index.setdefault(ann['label'], len(class_index)))
      segments.append((float(ann['segment'][0]), float(ann['segment'][1])))
  if not video_ids:
    raise InputError(f'{name}: no videos with subset {subset!r} '
                     f'(subsets present: {", ".join(sorted(subsets_seen)) or "none"})')
  if not segments:
    raise InputError(f'{name}: the {len(video_ids)} videos of subset {subset!r} have no '
                     'ground-truth segments')
  return GroundTruth(
      subset=subset, class_names=tuple(class_index), video_ids=tuple(video_ids),
      video=np.asarray(video, np.int64), label=np.asarray(label, np.int64),
      segments=np.asarray(segments, np.float64).reshape(-1, 2), source=name)


# ---------------------------------------------------------------------------------------------
# Proposals: the one definition of the format.


@dataclasses.dataclass(frozen=True, eq=False)
class Proposals:
  """Predictions of a results object, grouped by video in file order.

  Attributes:
    video_ids: videos in the order of the results object.
    video_offsets: int64 [V + 1]; predictions of video i are rows video_offsets[i]:[i + 1].
    video: int64 [M] index into video_ids.
    label_names: distinct labels in order of first appearance.
    label: int64 [M] index into label_names.
    scores: float64 [M].
    segments: float64 [M, 2] [start, end] in seconds.
    source: file name (or 'results') for messages.
  """
  video_ids: tuple[str, ...]
  video_offsets: np.ndarray
  video: np.ndarray
  label_names: tuple[str, ...]
  label: np.ndarray
  scores: np.ndarray
  segments: np.ndarray
  source: str = 'results'

  def __len__(self) -> int:
    return len(self.scores)

  def location(self, i: int) -> str:
    """'results[<video>][<j>]' of prediction row i, for messages."""
    v = int(self.video[i])
    return f'results[{self.video_ids[v]!r}][{i - int(self.video_offsets[v])}]'


def _prediction_problem(pred: Any) -> str | None:
  """Why one prediction is invalid, as '<suffix>: <problem>' (None when it is valid)."""
  if not isinstance(pred, Mapping):
    return f": must be an object with keys 'label', 'score', 'segment', got {_short(pred)}"
  for key in ('label', 'score', 'segment'):
    if key not in pred:
      return f": missing key '{key}'"
  if not isinstance(pred['label'], str):
    label = pred['label']
    return f"['label']: must be a string, got {_short(label)}"
  score = pred['score']
  if not _is_number_type(type(score)):
    return f"['score']: must be a number, got {_short(score)}"
  try:
    finite = math.isfinite(float(score))
  except OverflowError:
    finite = False
  if not finite:
    return f"['score']: {_short(score)} is not finite"
  problem = _segment_problem(pred['segment'])
  if problem:
    return f"['segment']: {problem}"
  return None


def validate_results(results: Any, source: str = 'results') -> Proposals:
  """Checks a results object {video: [{"label", "score", "segment": [s, e]}]} and parses it.

  The single definition of a valid prediction, used by `load_proposals` and `write_proposals`:
  label a string; score a finite number; segment two finite numbers (numeric strings accepted,
  as the ActivityNet code float()s them) with 0 <= start <= end. Extra keys are ignored.

  Args:
    results: the "results" mapping.
    source: name for messages (the file name when loading).

  Returns:
    Proposals.

  Raises:
    InputError: naming the first offending entry, e.g.
      "P.json: results['video_test_0000004'][3]['segment']: end 12.0 < start 13.5".
  """
  if not isinstance(results, Mapping):
    raise InputError(f"{source}: 'results' must be an object mapping video id to a list of "
                     f'predictions, got {type(results).__name__}')
  video_ids, counts, items = [], [], []
  for vid, preds in results.items():
    if not isinstance(vid, str):
      raise InputError(f'{source}: results: video id {vid!r} is not a string')
    if not isinstance(preds, (list, tuple)):
      raise InputError(f'{source}: results[{vid!r}]: must be a list of predictions, '
                       f'got {_short(preds)}')
    video_ids.append(vid)
    counts.append(len(preds))
    items.extend(preds)
  m = len(items)

  parsed = None
  try:  # fast path: whole-list extraction and set-of-types / vectorized checks
    labels = [pred['label'] for pred in items]
    scores = [pred['score'] for pred in items]
    segs = [pred['segment'] for pred in items]
    if (all(issubclass(t, str) for t in set(map(type, labels)))
        and all(_is_number_type(t) for t in set(map(type, scores)))):
      scores_arr = np.fromiter(scores, np.float64, count=m)
      segments = _segments_array(segs)
      if segments is not None and np.isfinite(scores_arr).all():
        parsed = scores_arr, segments
  except (TypeError, KeyError, ValueError, OverflowError):
    parsed = None
  if parsed is None:  # find and name the first bad prediction
    for vid, preds in results.items():
      for j, pred in enumerate(preds):
        problem = _prediction_problem(pred)
        if problem:
          raise InputError(f'{source}: results[{vid!r}][{j}]{problem}')
    raise InputError(f'{source}: malformed results')  # unreachable while both paths agree
  scores_arr, segments = parsed

  label_index = {n: i for i, n in enumerate(dict.fromkeys(labels))}
  offsets = np.zeros(len(video_ids) + 1, np.int64)
  np.cumsum(counts, out=offsets[1:])
  return Proposals(
      video_ids=tuple(video_ids), video_offsets=offsets,
      video=np.repeat(np.arange(len(video_ids), dtype=np.int64), counts),
      label_names=tuple(label_index),
      label=np.fromiter(map(label_index.__getitem__, labels), np.int64, count=m),
      scores=scores_arr, segments=segments, source=source)


def load_proposals(source: str | os.PathLike[str] | Mapping[str, Any]) -> Proposals:
  """Reads an ActivityNet result file {"version", "results": {...}, "external_data"}.

  Only "results" is required. Raises InputError on any malformed content (see validate_results).
  """
  with _gc_paused():
    results, name = _top_level(source, 'results')
    return validate_results(results, source=name)


def write_proposals(path: str | os.PathLike[str],
                    results: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    version: str = 'VERSION 1.3',
                    external_data: Mapping[str, Any] | None = None) -> int:
  """Validates and writes proposals as an ActivityNet result file, atomically.

  Args:
    path: output file.
    results: {video_id: [{"label": str, "score": number, "segment": [start_s, end_s]}, ...]};
      NumPy scalars are fine. Videos keep their order, predictions their list order (the order
      that breaks score ties, see the module docstring).
    version: the format's "version" field.
    external_data: the format's "external_data" field ({} by default).

  Returns:
    Number of predictions written.

  Raises:
    InputError: invalid results (nothing is written) or an unwritable path.
  """
  props = validate_results(results, source=os.fspath(path))
  label_names = props.label_names
  out: dict[str, list[dict[str, Any]]] = {}
  for v, vid in enumerate(props.video_ids):
    lo, hi = props.video_offsets[v], props.video_offsets[v + 1]
    out[vid] = [{'label': label_names[l], 'score': s, 'segment': [a, b]}
                for l, s, (a, b) in zip(props.label[lo:hi].tolist(), props.scores[lo:hi].tolist(),
                                        props.segments[lo:hi].tolist())]
  write_json(path, {'version': version, 'results': out,
                    'external_data': dict(external_data or {})})
  return len(props)


# ---------------------------------------------------------------------------------------------
# Ambiguous segments (THUMOS14 Ambiguous_test.txt).


def load_ambiguous(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Reads 'video_id start end' lines (any whitespace; blank lines skipped).

  Args:
    source: the file, or a mapping {video_id: [[start, end], ...]}.

  Returns:
    {video_id: float64 [A, 2]}.

  Raises:
    InputError: naming file:line for a malformed line or segment.
  """
  out: dict[str, list[tuple[float, float]]] = {}
  if isinstance(source, Mapping):
    for vid, segs in source.items():
      if isinstance(segs, np.ndarray):   # e.g. load_ambiguous's own output
        segs = segs.tolist()
      for j, seg in enumerate(segs):
        problem = _segment_problem(seg, strings=False)
        if problem:
          raise InputError(f'ambiguous[{vid!r}][{j}]: {problem}')
        out.setdefault(vid, []).append((float(seg[0]), float(seg[1])))
  else:
    name = os.fspath(source)
    try:
      with open(name, encoding='utf-8') as f:
        lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
      raise InputError(f'{name}: cannot read: {getattr(e, "strerror", None) or e}') from None
    for lineno, line in enumerate(lines, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 3:
        raise InputError(f'{name}:{lineno}: expected "video_id start end", got {line.strip()!r}')
      problem = _segment_problem(fields[1:])
      if problem:
        raise InputError(f'{name}:{lineno}: {problem}')
      out.setdefault(fields[0], []).append((float(fields[1]), float(fields[2])))
  return {vid: np.asarray(segs, np.float64).reshape(-1, 2) for vid, segs in out.items()}


def _overlaps_ambiguous(props: Proposals, ambiguous: Mapping[str, np.ndarray]) -> np.ndarray:
  """bool [M]: the prediction's segment overlaps an ambiguous segment of its video."""
  hit = np.zeros(len(props), bool)
  for v, vid in enumerate(props.video_ids):
    amb = ambiguous.get(vid)
    if amb is None or not len(amb):
      continue
    lo, hi = props.video_offsets[v], props.video_offsets[v + 1]
    seg = props.segments[lo:hi]
    inter = (np.minimum(seg[:, 1:2], amb[None, :, 1]) - np.maximum(seg[:, 0:1], amb[None, :, 0]))
    hit[lo:hi] = (inter > 0).any(axis=1)
  return hit


# ---------------------------------------------------------------------------------------------
# The metric.


def check_thresholds(tiou_thresholds: Iterable[float]) -> np.ndarray:
  try:
    t = np.asarray([float(x) for x in tiou_thresholds], np.float64)
  except (TypeError, ValueError) as e:
    raise InputError(f'tiou_thresholds: not a list of numbers: {e}') from None
  if not t.size:
    raise InputError('tiou_thresholds: empty')
  bad = t[~((t > 0) & (t <= 1))]
  if bad.size:
    raise InputError(f'tiou_thresholds: {float(bad[0])!r} is not in (0, 1]')
  return t


def _candidate_pairs(p_block: np.ndarray, p_seg: np.ndarray, g_block: np.ndarray,
                     g_seg: np.ndarray, num_blocks: int, min_tiou: float):
  """(prediction, ground truth) pairs of the same block with tIoU >= min_tiou.

  Args:
    p_block: int64 [P] block (video x class) per prediction, -1 for none; any order.
    p_seg, g_seg: [P, 2], [N, 2] segments (>= 0).
    g_block: int64 [N] block per ground truth, in [0, num_blocks).
    num_blocks: number of possible block ids.
    min_tiou: > 0.

  Returns:
    pair_p (int64, ascending), pair_g (int64, row of g_seg), tIoU (float64) -- computed with the
    official segment_iou arithmetic, so threshold tests agree with it bit for bit.
  """
  # A pair needs a positive-length intersection (min_tiou > 0): g_start < p_end and
  # g_end > p_start, so g_start lies in (p_start - longest ground truth of the block, p_end).
  # Ground truths sorted by the key block * span + start give that band with two searchsorted
  # calls. Rounding the key is monotone, so no member of the band is lost; the lower end is
  # lowered by far more than the rounding of p_start - width; span (a power of two) >
  # 4 * (largest time + 1) keeps blocks apart. Extra pairs are harmless: the exact tIoU test
  # drops them. A block of a few ground truths is taken whole: cheaper than searching it
  # (ActivityNet's are nearly all like that), and the fallback if the keys would overflow.
  g_pos_of = np.full(num_blocks, -1, np.int64)
  block_ids, block_size = np.unique(g_block, return_counts=True)
  g_pos_of[block_ids] = np.arange(len(block_ids))
  g_pos = g_pos_of[g_block]
  g_order = np.lexsort((g_seg[:, 0], g_pos))
  gs = g_seg[g_order, 0]
  ge = g_seg[g_order, 1]
  block_first = np.cumsum(block_size) - block_size          # first row of a block in g_order
  maxlen = np.zeros(len(block_ids))
  np.maximum.at(maxlen, g_pos, g_seg[:, 1] - g_seg[:, 0])

  pos = np.where(p_block >= 0, g_pos_of[np.maximum(p_block, 0)], -1)
  has = pos >= 0
  pos = np.maximum(pos, 0)
  ps, pe = p_seg[:, 0], p_seg[:, 1]
  lo = np.where(has, block_first[pos], 0)
  hi = np.where(has, lo + block_size[pos], 0)
  bound = 4.0 * (max(float(g_seg.max()), float(p_seg.max()) if len(p_seg) else 0.0) + 1.0)
  span = 2.0 ** math.frexp(bound)[1] if bound < 2.0**900 else math.inf
  search = np.flatnonzero(has & (block_size[pos] > 4))
  if len(search) and math.isfinite(span * 4 * (len(block_ids) + 1)):
    g_key = g_pos[g_order] * span + gs
    width, base = maxlen[pos[search]], pos[search] * span
    ps_s = ps[search]
    hi[search] = np.searchsorted(g_key, base + pe[search], 'right')
    lo[search] = np.searchsorted(g_key, base + (ps_s - width - 1e-6 * (ps_s + width + 1.0)))
  counts = hi - lo
  pair_p = np.repeat(np.arange(len(p_block), dtype=np.int64), counts)
  pair_pos = (np.arange(len(pair_p), dtype=np.int64)
              - np.repeat(np.cumsum(counts) - counts - lo, counts))
  gsp, gep = gs[pair_pos], ge[pair_pos]
  psp, pep = ps[pair_p], pe[pair_p]
  inter = np.minimum(pep, gep) - np.maximum(psp, gsp)
  keep = np.flatnonzero(inter > 0)
  pair_p, pair_pos, inter = pair_p[keep], pair_pos[keep], inter[keep]
  union = (gep[keep] - gsp[keep]) + (pep[keep] - psp[keep]) - inter
  tiou = inter / union
  keep = np.flatnonzero(tiou >= min_tiou)
  return pair_p[keep], g_order[pair_pos[keep]], tiou[keep]


def _greedy_true_positives(pair_p: np.ndarray, pair_g: np.ndarray, pair_tiou: np.ndarray,
                           thresholds: np.ndarray, num_pred: int, num_gt: int) -> np.ndarray:
  """The ActivityNet greedy matching: every class and video at once, threshold by threshold.

  Args:
    pair_p: int64 ascending; prediction = its rank in processing order (earlier = higher score).
    pair_g: int64 ground-truth index; a lower index wins tIoU ties.
    pair_tiou: float64 tIoU of the pair (all pairs that can pass any threshold).
    thresholds: [K].
    num_pred, num_gt: P, N.

  Returns:
    bool [K, P] true positives.

  Sequential greedy: prediction p (in order) takes the best candidate (tIoU >= t) not taken by an
  earlier prediction, else is a false positive. Rounds: every unresolved prediction p looks at its
  best candidate g among those still free; p takes g now iff no earlier unresolved prediction has
  g as a free candidate. That decision is final: every candidate better than g was taken by a
  resolved prediction, and a resolved prediction that took one of p's candidates is earlier than
  p (when it was resolved, p was an unresolved holder of that candidate and so had to be later);
  no earlier unresolved prediction can take g. A prediction left without free candidates is a
  false positive. The earliest unresolved prediction of each block always resolves, so the loop
  ends; conflicts are local, so a few dozen rounds settle a THUMOS-size case.
  """
  tp = np.zeros((len(thresholds), num_pred), bool)
  if not len(pair_p):
    return tp
  # Each prediction's candidates in preference order, so that its best free candidate is the
  # first one still alive; then, per threshold, entries (p, g) form one run per unresolved p.
  # One threshold at a time keeps the arrays cache-sized; int32 (the loop is memory-bound).
  order = _preference_order(pair_p, pair_g, pair_tiou)
  itype = np.int32 if max(num_pred, num_gt) < 2**31 - 1 else np.int64
  pair_p, pair_g = pair_p[order].astype(itype), pair_g[order].astype(itype)
  pair_tiou = pair_tiou[order]
  taken = np.zeros(num_gt, bool)
  earliest = np.zeros(num_gt, itype)      # earliest unresolved holder of each free g
  no_p = itype(num_pred)
  for k, t in enumerate(thresholds):
    m = pair_tiou >= t
    a_p, a_g = pair_p[m], pair_g[m]
    taken[:] = False
    while len(a_p):
      n = len(a_p)
      head = np.empty(n, bool)
      head[0] = True
      np.not_equal(a_p[1:], a_p[:-1], out=head[1:])
      starts = np.flatnonzero(head)
      p, best_g = a_p[starts], a_g[starts]
      earliest[a_g] = no_p
      np.minimum.at(earliest, a_g, a_p)
      win = earliest[best_g] == p
      tp[k, p[win]] = True
      taken[best_g[win]] = True
      keep = ~(np.repeat(win, np.diff(np.append(starts, n))) | taken[a_g])
      a_p, a_g = a_p[keep], a_g[keep]
  return tp


def _preference_order(pair_p: np.ndarray, pair_g: np.ndarray, pair_tiou: np.ndarray) -> np.ndarray:
  """Permutation ordering pairs by (p, tIoU descending, g); pairs arrive ascending in p."""
  n = len(pair_p)
  head = np.empty(n, bool)
  head[0] = True
  np.not_equal(pair_p[1:], pair_p[:-1], out=head[1:])
  starts = np.flatnonzero(head)
  runs = np.diff(np.append(starts, n))
  order = np.arange(n)
  multi = np.flatnonzero(np.repeat(runs > 1, runs))  # most predictions have one candidate
  if not len(multi):
    return order
  # Rank by (tIoU desc, g asc) with two stable sorts (g first), then sort by (run, rank).
  g = pair_g[multi]
  by = np.argsort(g.astype(np.int16) if g.max() < 2**15 else g, kind='stable')  # radix
  by = by[np.argsort(-pair_tiou[multi][by], kind='stable')]
  rank = np.empty(len(multi), np.int64)
  rank[by] = np.arange(len(multi))
  run = (np.cumsum(head) - 1)[multi]
  order[multi] = multi[np.argsort(run * len(multi) + rank)]
  return order


def _average_precision(tp: np.ndarray, class_bounds: np.ndarray,
                       num_positive: np.ndarray) -> np.ndarray:
  """[K, C] interpolated AP, the official arithmetic, from true positives in processing order.

  Args:
    tp: bool [K, P]; class c owns columns class_bounds[c]:class_bounds[c + 1].
    class_bounds: int [C + 1].
    num_positive: int [C] ground truths per class (> 0).

  The official interpolated_prec_rec sums, over every recall step, (recall step) * (precision
  envelope): one term per true positive and, when recall ends below 1, a final 0 * 0 term. Only
  true positives matter: between two of them precision falls, so the envelope at a true positive
  is the largest precision of it and the later true positives. Here the terms are computed from
  the true positives alone with the same float operations on the same values (precision
  tp_cum / (tp_cum + fp_cum), recall tp_cum / npos), and each AP is one np.sum over exactly the
  official terms in their order, so even the pairwise summation rounds identically.
  """
  k_count, num_classes = tp.shape[0], len(num_positive)
  ap = np.zeros((k_count, num_classes))
  k, pos = np.nonzero(tp)                           # row-major: by threshold, then position
  if not len(k):
    return ap
  cls = np.searchsorted(class_bounds, pos, 'right') - 1
  seg = k * num_classes + cls                       # ascending; one run per (threshold, class)
  head = np.r_[True, seg[1:] != seg[:-1]]
  starts = np.flatnonzero(head)
  counts = np.diff(np.append(starts, len(seg)))
  tp_cum = (np.arange(len(seg)) - np.repeat(starts, counts) + 1).astype(np.float64)
  fp_cum = (pos - class_bounds[cls] + 1) - tp_cum   # exact integers, as the official cumsum
  npos = num_positive[cls].astype(np.float64)
  recall = tp_cum / npos
  precision = tp_cum / (tp_cum + fp_cum)
  # Envelope = suffix max of precision within each run: a running max over reversed integer
  # keys (run offset + rank of the value), exact because only ranks are compared.
  values, rank = np.unique(precision, return_inverse=True)
  key = (len(starts) - 1 - (np.cumsum(head) - 1)) * len(values) + rank
  envelope = values[np.maximum.accumulate(key[::-1])[::-1] % len(values)]
  terms = (recall - (tp_cum - 1) / npos) * envelope
  last_recall = recall[starts + counts - 1]
  for i, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
    run = terms[start:start + count]
    if last_recall[i] != 1.0:
      run = np.append(run, 0.0)
    ap.flat[seg[start]] = run.sum()
  return ap


@dataclasses.dataclass(frozen=True, eq=False)
class Evaluation:
  """What `compute` measured; `to_dict()` is the results-JSON content."""
  tiou_thresholds: tuple[float, ...]
  class_names: tuple[str, ...]
  ap: np.ndarray                  # [K, C] AP per threshold and class (fractions)
  map: np.ndarray                 # [K]
  average_map: float
  subset: str
  num_videos: int                 # videos of the subset
  num_ground_truth: int
  num_predictions: int            # scored (after the drops below)
  num_loaded: int                 # in the proposals
  num_unknown_dropped: int        # labels without ground truth in the subset (drop_unknown_labels)
  num_ambiguous_dropped: int      # overlapping an ambiguous segment (ambiguous=...)
  num_without_ground_truth: int   # scored predictions on videos with no ground truth in the subset
  ambiguous: str | None           # where the ambiguous segments came from; None: not used

  def to_dict(self) -> dict[str, Any]:
    return {
        'tiou_thresholds': [float(t) for t in self.tiou_thresholds],
        'map': [float(m) for m in self.map],
        'average_map': float(self.average_map),
        'ap_per_class': {c: [float(a) for a in self.ap[:, i]]
                         for i, c in enumerate(self.class_names)},
        'num_ground_truth': int(self.num_ground_truth),
        'num_predictions': int(self.num_predictions),
    }


def compute(ground_truth: GroundTruth, proposals: Proposals,
            tiou_thresholds: Iterable[float] = THUMOS14.tiou_thresholds, *,
            ambiguous: str | os.PathLike[str] | Mapping[str, Any] | None = None,
            drop_unknown_labels: bool = False) -> Evaluation:
  """Scores proposals against ground truth (see the module docstring for the exact rules).

  Args:
    ground_truth: from load_ground_truth.
    proposals: from load_proposals / validate_results.
    tiou_thresholds: thresholds in (0, 1], used exactly as given, in this order.
    ambiguous: None (ActivityNet/UM convention), or ambiguous segments (file or mapping, see
      load_ambiguous) whose overlapping predictions are dropped (W-TALC convention).
    drop_unknown_labels: drop predictions whose label has no ground truth in the subset instead
      of raising.

  Returns:
    Evaluation.

  Raises:
    InputError: unknown label (unless dropped), bad thresholds, bad ambiguous file.
  """
  thresholds = check_thresholds(tiou_thresholds)
  gt, props = ground_truth, proposals
  num_classes = len(gt.class_names)
  class_index = {n: i for i, n in enumerate(gt.class_names)}

  label_to_class = np.asarray([class_index.get(n, -1) for n in props.label_names], np.int64)
  p_class = label_to_class[props.label] if len(props) else np.zeros(0, np.int64)
  unknown = p_class < 0
  num_unknown = int(unknown.sum())
  if num_unknown and not drop_unknown_labels:
    i = int(np.argmax(unknown))
    names = sorted({props.label_names[l] for l in np.unique(props.label[unknown])})
    raise InputError(
        f"{props.source}: {props.location(i)}['label']: {props.label_names[props.label[i]]!r} "
        f'is not a class with ground truth in subset {gt.subset!r} ({num_unknown} predictions, '
        f'{len(names)} unknown labels; --drop_unknown_labels drops them)')
  keep = ~unknown

  num_ambiguous, ambiguous_name = 0, None
  if ambiguous is not None:
    ambiguous_name = ('<mapping>' if isinstance(ambiguous, Mapping) else os.fspath(ambiguous))
    hit = _overlaps_ambiguous(props, load_ambiguous(ambiguous)) & keep
    num_ambiguous = int(hit.sum())
    keep &= ~hit

  gt_video_of = {vid: i for i, vid in enumerate(gt.video_ids)}
  video_map = np.asarray([gt_video_of.get(vid, -1) for vid in props.video_ids], np.int64)
  has_gt = np.zeros(len(gt.video_ids) + 1, bool)   # last slot: videos outside the subset
  has_gt[gt.video] = True
  rows = np.flatnonzero(keep)
  p_video = video_map[props.video[rows]] if len(rows) else np.zeros(0, np.int64)
  num_without = int((~has_gt[p_video]).sum())

  # Processing order: by class, then descending score, ties in file order (two stable sorts;
  # the class one is a radix sort on int16).
  order = np.argsort(-props.scores[rows], kind='stable')
  cls_dtype = np.int16 if num_classes < 2**15 else np.int64
  order = order[np.argsort(p_class[rows][order].astype(cls_dtype), kind='stable')]
  rows, p_video = rows[order], p_video[order]
  cls = p_class[rows]
  p_block = np.where(p_video >= 0, p_video * num_classes + cls, -1)
  g_block = gt.video * num_classes + gt.label
  pair_p, pair_g, pair_tiou = _candidate_pairs(
      p_block, props.segments[rows], g_block, gt.segments, len(gt.video_ids) * num_classes,
      float(thresholds.min()))
  tp = _greedy_true_positives(pair_p, pair_g, pair_tiou, thresholds, len(rows), len(gt))

  bounds = np.zeros(num_classes + 1, np.int64)
  np.cumsum(np.bincount(cls, minlength=num_classes), out=bounds[1:])
  ap = _average_precision(tp, bounds, np.bincount(gt.label, minlength=num_classes))
  mean_ap = ap.mean(axis=1)
  return Evaluation(
      tiou_thresholds=tuple(float(t) for t in thresholds), class_names=gt.class_names, ap=ap,
      map=mean_ap, average_map=float(mean_ap.mean()), subset=gt.subset,
      num_videos=len(gt.video_ids), num_ground_truth=len(gt), num_predictions=len(rows),
      num_loaded=len(props), num_unknown_dropped=num_unknown if drop_unknown_labels else 0,
      num_ambiguous_dropped=num_ambiguous, num_without_ground_truth=num_without,
      ambiguous=ambiguous_name)


# ---------------------------------------------------------------------------------------------
# The table.


def _averages(evaluation: Evaluation, protocol: Protocol | None) -> list[tuple[str, float]]:
  """(label, value) of the protocol's averages whose thresholds were all evaluated, + the mean.

  The mean over all evaluated thresholds is left out when one of the averages already is it.
  """
  t = np.asarray(evaluation.tiou_thresholds)
  out, covers_all = [], False
  if protocol is not None:
    grid = np.asarray(protocol.tiou_thresholds)
    for lo, hi in protocol.averages:
      want = grid[(grid >= lo - 1e-9) & (grid <= hi + 1e-9)]
      cols = [np.flatnonzero(np.abs(t - w) < 1e-9) for w in want]
      if want.size and all(c.size for c in cols):
        idx = sorted({int(c[0]) for c in cols})
        out.append((f'avg {lo:g}:{hi:g}', float(np.mean(evaluation.map[idx]))))
        covers_all |= len(idx) == len(t)
  if not covers_all:
    out.append((f'mean ({len(t)})', float(evaluation.average_map)))
  return out


def format_table(evaluation: Evaluation, *, protocol: Protocol | None = None,
                 ground_truth_name: str = '', proposals_name: str = '',
                 per_class: bool = False) -> str:
  """A readable mAP table (percent), with counts and the ambiguous-segment convention."""
  e = evaluation
  lines = []
  head = f'Localization mAP ({protocol.name} protocol)' if protocol else 'Localization mAP'
  lines.append(head)
  lines.append(f'  ground truth  {ground_truth_name or "-"}: subset {e.subset!r}, '
               f'{e.num_videos} videos, {len(e.class_names)} classes, '
               f'{e.num_ground_truth} segments')
  dropped = []
  if e.num_unknown_dropped:
    dropped.append(f'{e.num_unknown_dropped} with unknown labels dropped')
  if e.ambiguous is not None:
    dropped.append(f'{e.num_ambiguous_dropped} overlapping ambiguous segments dropped')
  lines.append(f'  proposals     {proposals_name or "-"}: {e.num_loaded} loaded, '
               + ''.join(d + ', ' for d in dropped)
               + f'{e.num_predictions} scored ({e.num_without_ground_truth} on videos without '
               'ground truth: false positives)')
  if e.ambiguous is None:
    lines.append('  ambiguous     not used (ActivityNet / UM convention)')
  else:
    lines.append(f'  ambiguous     {e.ambiguous}: overlapping predictions dropped '
                 '(W-TALC convention)')
  lines.append('')
  lines.append(f'  {"tIoU":<13s}{"mAP %":>6s}')
  for t, m in zip(e.tiou_thresholds, e.map):
    lines.append(f'  {t:<13.2f}{100 * m:6.2f}')
  for label, value in _averages(e, protocol):
    lines.append(f'  {label:<13s}{100 * value:6.2f}')
  if per_class:
    lines.append('')
    width = max([len(c) for c in e.class_names] + [5])
    lines.append('  ' + 'class'.ljust(width) + ''.join(f'  {t:5.2f}' for t in e.tiou_thresholds))
    for i in sorted(range(len(e.class_names)), key=lambda i: e.class_names[i]):
      lines.append('  ' + e.class_names[i].ljust(width)
                   + ''.join(f'  {100 * a:5.1f}' for a in e.ap[:, i]))
  return '\n'.join(lines)
