"""Two references for aumn_jax/evaluation.py, independent of its code (NumPy / plain Python).

  * `reference_ap`: the protocol's definition in plain Python loops (with our tie rule and our
    zero-length rule): the tests compare it with evaluation.compute on many random, tie-heavy
    small cases;
  * `official_ap`: a line-by-line transcription of ActivityNet's
    compute_average_precision_detection / segment_iou / interpolated_prec_rec (pandas replaced by
    lists), compared bit for bit on tie-free inputs, where the official code is deterministic.

Both take already-parsed rows: gt [(video, label, start, end)], predictions
[(video, label, score, start, end)] in file order. They live beside the fast evaluator (not in
tests/) so that benchmarks/evaluator.py times the same references the tests check against.
"""
import numpy as np


# ---------------------------------------------------------------------------------------------
# Reference 1: the definition, plain loops.


def reference_tiou(s, e, gs, ge):
  inter = min(e, ge) - max(s, gs)
  if inter <= 0:
    return 0.0
  return inter / ((e - s) + (ge - gs) - inter)


def reference_interpolated_ap(tp, npos):
  """AP = sum over true positives of (1/npos) * max precision at this rank or later."""
  precision, hits = [], 0
  for i, t in enumerate(tp):
    hits += t
    precision.append(hits / (i + 1))
  total = 0.0
  for i, t in enumerate(tp):
    if t:
      total += max(precision[i:]) / npos
  return total


def reference_ap(gt, preds, thresholds):
  """gt: [(video, label, start, end)], preds: [(video, label, score, start, end)], file order.

  Returns (class names in order of first appearance, ap[k][c]).
  """
  classes, gt_of = [], {}   # gt_of[(label, video)]: [(index in file, start, end)]
  for i, (v, label, s, e) in enumerate(gt):
    if label not in classes:
      classes.append(label)
    gt_of.setdefault((label, v), []).append((i, s, e))
  preds_of = {}
  for p in preds:
    preds_of.setdefault(p[1], []).append(p)
  ap = [[0.0] * len(classes) for _ in thresholds]
  for c, name in enumerate(classes):
    npos = sum(1 for _, l, _, _ in gt if l == name)
    ranked = sorted(preds_of.get(name, []), key=lambda p: -p[2])  # stable: ties keep file order
    if not ranked:
      continue
    for k, thr in enumerate(thresholds):
      matched, tp = set(), []
      for video, _, _, s, e in ranked:
        best, best_tiou = None, -1.0
        for i, gs, ge in gt_of.get((name, video), []):  # file order: first of equal tIoUs wins
          if i in matched:
            continue
          tiou = reference_tiou(s, e, gs, ge)
          if tiou >= thr and tiou > best_tiou:
            best, best_tiou = i, tiou
        if best is None:
          tp.append(0)
        else:
          matched.add(best)
          tp.append(1)
      ap[k][c] = reference_interpolated_ap(tp, npos)
  return classes, ap


# ---------------------------------------------------------------------------------------------
# Reference 2: the official ActivityNet code, transcribed (Evaluation/eval_detection.py, utils.py).


def official_segment_iou(target_segment, candidate_segments):
  tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
  tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
  segments_intersection = (tt2 - tt1).clip(0)
  segments_union = (candidate_segments[:, 1] - candidate_segments[:, 0]) \
      + (target_segment[1] - target_segment[0]) - segments_intersection
  return segments_intersection.astype(float) / segments_union


def official_interpolated_prec_rec(prec, rec):
  mprec = np.hstack([[0], prec, [0]])
  mrec = np.hstack([[0], rec, [1]])
  for i in range(len(mprec) - 1)[::-1]:
    mprec[i] = max(mprec[i], mprec[i + 1])
  idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
  return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def official_class_ap(ground_truth, prediction, tiou_thresholds):
  """ground_truth: [(video, start, end)], prediction: [(video, start, end, score)]."""
  ap = np.zeros(len(tiou_thresholds))
  if not prediction:
    return ap
  npos = float(len(ground_truth))
  lock_gt = np.ones((len(tiou_thresholds), len(ground_truth))) * -1
  sort_idx = np.array([p[3] for p in prediction]).argsort()[::-1]
  prediction = [prediction[i] for i in sort_idx]
  tp = np.zeros((len(tiou_thresholds), len(prediction)))
  fp = np.zeros((len(tiou_thresholds), len(prediction)))
  gbvn = {}
  for index, (v, s, e) in enumerate(ground_truth):
    gbvn.setdefault(v, []).append((index, s, e))
  for idx, this_pred in enumerate(prediction):
    if this_pred[0] not in gbvn:
      fp[:, idx] = 1
      continue
    this_gt = gbvn[this_pred[0]]
    tiou_arr = official_segment_iou(np.array(this_pred[1:3]),
                                    np.array([[s, e] for _, s, e in this_gt]))
    tiou_sorted_idx = tiou_arr.argsort()[::-1]
    for tidx, tiou_thr in enumerate(tiou_thresholds):
      for jdx in tiou_sorted_idx:
        if tiou_arr[jdx] < tiou_thr:
          fp[tidx, idx] = 1
          break
        if lock_gt[tidx, this_gt[jdx][0]] >= 0:
          continue
        tp[tidx, idx] = 1
        lock_gt[tidx, this_gt[jdx][0]] = idx
        break
      if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
        fp[tidx, idx] = 1
  tp_cumsum = np.cumsum(tp, axis=1).astype(float)
  fp_cumsum = np.cumsum(fp, axis=1).astype(float)
  recall_cumsum = tp_cumsum / npos
  precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
  for tidx in range(len(tiou_thresholds)):
    ap[tidx] = official_interpolated_prec_rec(precision_cumsum[tidx, :], recall_cumsum[tidx, :])
  return ap


def official_ap(gt, preds, thresholds):
  """Same arguments as reference_ap; returns (classes, ap [K, C], mAP [K], average_mAP).

  The wrapper of ANETdetection: activity_index in order of first appearance, groupby('label')
  (kept order), AP 0 for a class without predictions, mean over classes then thresholds.
  """
  activity_index, gt_by_label, pred_by_label = {}, {}, {}
  for v, label, s, e in gt:
    activity_index.setdefault(label, len(activity_index))
    gt_by_label.setdefault(label, []).append((v, s, e))
  for v, label, score, s, e in preds:
    pred_by_label.setdefault(label, []).append((v, s, e, score))
  ap = np.zeros((len(thresholds), len(activity_index)))
  for label, cidx in activity_index.items():
    ap[:, cidx] = official_class_ap(gt_by_label[label], pred_by_label.get(label, []), thresholds)
  m = ap.mean(axis=1)
  return list(activity_index), ap, m, m.mean()
