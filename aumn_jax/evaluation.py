"""Localization mAP from exported proposals, exact to the ActivityNet protocol (SPEC.md §6).

Holds: the protocol presets (`THUMOS14`, `ACTIVITYNET`), the metric (`compute` -> `Evaluation`,
whose `to_dict()` is the results JSON) and the printed table (`format_table`). Its inputs come
from aumn_jax/formats.py, which reads, validates and writes the file formats (ground truth,
proposals, ambiguous segments, `write_json`) and defines `InputError`. NumPy only: it never
imports jax, so scoring a proposals file needs no accelerator stack.
Deliberately does not hold: the file formats (aumn_jax/formats.py), localization (CAS ->
proposals, aumn_jax/localization.py), the CLI (evaluate.py), proposal-recall (AR@AN) metrics,
the W-TALC evaluator's snippet-unit arithmetic.

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

import dataclasses
import math
import os
from typing import Any, Iterable, Mapping

import numpy as np

from aumn_jax import formats


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


# ---------------------------------------------------------------------------------------------
# Ambiguous segments: the W-TALC convention (the file is read by formats.load_ambiguous).


def _overlaps_ambiguous(props: formats.Proposals,
                        ambiguous: Mapping[str, np.ndarray]) -> np.ndarray:
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
    raise formats.InputError(f'tiou_thresholds: not a list of numbers: {e}') from None
  if not t.size:
    raise formats.InputError('tiou_thresholds: empty')
  bad = t[~((t > 0) & (t <= 1))]
  if bad.size:
    raise formats.InputError(f'tiou_thresholds: {float(bad[0])!r} is not in (0, 1]')
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


def compute(ground_truth: formats.GroundTruth, proposals: formats.Proposals,
            tiou_thresholds: Iterable[float] = THUMOS14.tiou_thresholds, *,
            ambiguous: str | os.PathLike[str] | Mapping[str, Any] | None = None,
            drop_unknown_labels: bool = False) -> Evaluation:
  """Scores proposals against ground truth (see the module docstring for the exact rules).

  Args:
    ground_truth: from formats.load_ground_truth.
    proposals: from formats.load_proposals / formats.validate_results.
    tiou_thresholds: thresholds in (0, 1], used exactly as given, in this order.
    ambiguous: None (ActivityNet/UM convention), or ambiguous segments (file or mapping, see
      formats.load_ambiguous) whose overlapping predictions are dropped (W-TALC convention).
    drop_unknown_labels: drop predictions whose label has no ground truth in the subset instead
      of raising.

  Returns:
    Evaluation.

  Raises:
    formats.InputError: unknown label (unless dropped), bad thresholds, bad ambiguous file.
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
    raise formats.InputError(
        f"{props.source}: {props.location(i)}['label']: {props.label_names[props.label[i]]!r} "
        f'is not a class with ground truth in subset {gt.subset!r} ({num_unknown} predictions, '
        f'{len(names)} unknown labels; --drop_unknown_labels drops them)')
  keep = ~unknown

  num_ambiguous, ambiguous_name = 0, None
  if ambiguous is not None:
    ambiguous_name = ('<mapping>' if isinstance(ambiguous, Mapping) else os.fspath(ambiguous))
    hit = _overlaps_ambiguous(props, formats.load_ambiguous(ambiguous)) & keep
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
