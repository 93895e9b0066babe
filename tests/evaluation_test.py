"""Tests of aumn_jax/evaluation.py, aumn_jax/formats.py and evaluate.py --ground_truth/--proposals.

Checked against two references independent of the code under test
(aumn_jax/evaluation_reference.py): `reference_ap`, the protocol's definition in plain Python
loops, on many random, tie-heavy small cases; `official_ap`, ActivityNet's code transcribed,
bit for bit on tie-free inputs.
"""
import json
import os
import subprocess
import sys

import conftest
import numpy as np
import pytest

from aumn_jax import evaluation
from aumn_jax import evaluation_reference
from aumn_jax import formats

REPO = conftest.REPO
UM_GT = os.path.join(conftest.SHARED_DATA, 'thumos14_um', 'gt.json')
ACM_GT = os.path.join(conftest.SHARED_DATA, 'thumos14_um', 'gt_acmnet.json')
AMBIGUOUS = os.path.join(conftest.SHARED_DATA, 'thumos14_wtalc', 'Thumos14reduced-Annotations',
                         'Ambiguous_test.txt')


# ---------------------------------------------------------------------------------------------
# Helpers.


def to_files(gt, preds, subset='test', other_subset_gt=()):
  """(gt dict, results dict) in the JSON formats from the tuple lists (file order kept)."""
  database = {}
  for v, l, s, e in gt:
    database.setdefault(v, {'subset': subset, 'annotations': []})['annotations'].append(
        {'segment': [s, e], 'label': l})
  for v, l, s, e in other_subset_gt:
    database.setdefault(v, {'subset': 'train', 'annotations': []})['annotations'].append(
        {'segment': [s, e], 'label': l})
  results = {}
  for v, l, score, s, e in preds:
    results.setdefault(v, []).append({'label': l, 'score': score, 'segment': [s, e]})
  return {'database': database}, results


def run_ours(gt, preds, thresholds, **kwargs):
  gt_dict, results = to_files(gt, preds)
  return evaluation.compute(formats.load_ground_truth(gt_dict),
                            formats.validate_results(results), thresholds, **kwargs)


def file_order(gt, preds):
  """Reorder tuples the way the JSON files group them (by video in first-appearance order)."""
  def grouped(rows):
    order = list(dict.fromkeys(r[0] for r in rows))
    return [r for v in order for r in rows if r[0] == v]
  return grouped(gt), grouped(preds)


def random_case(rng, *, ties):
  """Small random case. ties=True: integer grid (tIoU/score ties, duplicates, zero lengths)."""
  classes = ['a', 'b', 'c', 'd'][:rng.integers(1, 5)]
  videos = [f'v{i}' for i in range(rng.integers(1, 5))]
  gt, preds = [], []

  def segment(scale):
    if ties:
      s = int(rng.integers(0, 12))
      return float(s), float(s + rng.integers(0, 5))
    s = float(rng.uniform(0, 30))
    return s, s + float(rng.uniform(0.1, scale))

  for v in videos:
    for _ in range(rng.integers(0, 14)):  # blocks of > 4 take the band-search path
      gt.append((v, str(rng.choice(classes)), *segment(8)))
  if not gt:
    gt.append((videos[0], classes[0], 1.0, 3.0))
  present = sorted({l for _, l, _, _ in gt})
  for v in videos + ['v_without_gt']:
    for _ in range(rng.integers(0, 20)):
      if ties and gt and rng.random() < 0.25:  # duplicate a ground truth exactly
        gv, gl, gs, ge = gt[rng.integers(len(gt))]
        if gv == v:
          preds.append((v, gl, float(rng.integers(1, 5)) / 4, gs, ge))
          continue
      score = float(rng.integers(1, 5)) / 4 if ties else float(rng.random())
      preds.append((v, str(rng.choice(present)), score, *segment(10)))
  return file_order(gt, preds)


THRESHOLD_POOL = [0.1, 0.2, 0.25, 0.3, 1 / 3, 0.5, 0.7, 0.75, 0.9, 1.0] + list(
    evaluation.THUMOS14.tiou_thresholds) + list(evaluation.ACTIVITYNET.tiou_thresholds)


# ---------------------------------------------------------------------------------------------
# Agreement with the references.


@pytest.mark.parametrize('ties', [True, False])
def test_random_cases_match_plain_loop_reference(ties):
  rng = np.random.default_rng(1 if ties else 2)
  for _ in range(250):
    gt, preds = random_case(rng, ties=ties)
    thresholds = list(rng.choice(THRESHOLD_POOL, size=rng.integers(1, 6), replace=False))
    ours = run_ours(gt, preds, thresholds)
    classes, ap = evaluation_reference.reference_ap(gt, preds, thresholds)
    assert list(ours.class_names) == classes
    np.testing.assert_allclose(ours.ap, np.array(ap).reshape(len(thresholds), -1), rtol=0,
                               atol=1e-12, err_msg=repr((gt, preds, thresholds)))
    np.testing.assert_allclose(ours.map, np.mean(ap, axis=1), rtol=0, atol=1e-12)
    assert ours.num_predictions == len(preds)
    assert ours.num_ground_truth == len(gt)
    videos_with_gt = {g[0] for g in gt}
    assert ours.num_without_ground_truth == sum(p[0] not in videos_with_gt for p in preds)


def test_tie_free_random_cases_are_bit_identical_to_official_code():
  rng = np.random.default_rng(3)
  for _ in range(150):
    gt, preds = random_case(rng, ties=False)
    thresholds = evaluation.THUMOS14.tiou_thresholds if rng.random() < 0.5 else \
        evaluation.ACTIVITYNET.tiou_thresholds
    ours = run_ours(gt, preds, thresholds)
    classes, ap, m, avg = evaluation_reference.official_ap(gt, preds, np.array(thresholds))
    assert list(ours.class_names) == classes
    assert np.array_equal(ours.ap, ap), (gt, preds)
    assert np.array_equal(ours.map, m)
    assert ours.average_map == avg


def test_larger_dense_case_with_long_matching_chains():
  # Many overlapping ground truths and predictions in one block: conflicts chain from prediction
  # to prediction, so the matching needs many rounds; it must still equal sequential greedy.
  rng = np.random.default_rng(4)
  gt = [('v', 'x', float(i), float(i + 3)) for i in range(0, 120, 2)]
  gt += [('v', 'y', float(i), float(i + 1)) for i in range(0, 60, 3)]
  starts = rng.uniform(0, 120, 1500)
  lengths = rng.uniform(0.5, 8, 1500)
  labels = rng.choice(['x', 'y'], 1500, p=[0.8, 0.2])
  preds = [('v', str(l), float(round(sc, 2)), float(round(s, 1)), float(round(s + d, 1)))
           for l, sc, s, d in zip(labels, rng.random(1500), starts, lengths)]
  thresholds = [0.1, 0.3, 0.5, 0.7, 0.95]
  ours = run_ours(gt, preds, thresholds)
  classes, ap = evaluation_reference.reference_ap(gt, preds, thresholds)
  assert list(ours.class_names) == classes
  np.testing.assert_allclose(ours.ap, ap, rtol=0, atol=1e-12)


def test_chain_where_each_prediction_waits_for_the_previous_one():
  # Prediction i overlaps ground truths i and i+1 and prefers i+1: sequential greedy gives every
  # prediction its preferred one; a naive "all at once" assignment would not.
  gt = [('v', 'x', 10.0 * i, 10.0 * i + 10) for i in range(30)]
  preds = [('v', 'x', 1.0 - 0.01 * i, 10.0 * i + 4, 10.0 * i + 16) for i in range(30)]
  ours = run_ours(gt, preds, [0.1, 0.2, 0.3])
  _, ap = evaluation_reference.reference_ap(gt, preds, [0.1, 0.2, 0.3])
  np.testing.assert_allclose(ours.ap, ap, rtol=0, atol=1e-12)


def test_extreme_time_values():
  # Times near 1e300 would overflow the band-search keys; blocks are then taken whole.
  rng = np.random.default_rng(7)
  for scale in (1e-300, 1e-3, 1e6, 1e300):
    gt = [('v', 'x', float(s) * scale, float(s + d) * scale)
          for s, d in zip(rng.uniform(0, 50, 12), rng.uniform(0.5, 5, 12))]
    preds = [('v', 'x', float(sc), float(s) * scale, float(s + d) * scale)
             for sc, s, d in zip(rng.random(40), rng.uniform(0, 50, 40), rng.uniform(0.5, 6, 40))]
    ours = run_ours(gt, preds, [0.1, 0.5])
    _, ap = evaluation_reference.reference_ap(gt, preds, [0.1, 0.5])
    np.testing.assert_allclose(ours.ap, ap, rtol=0, atol=1e-12, err_msg=str(scale))
    assert ours.map[0] > 0


# ---------------------------------------------------------------------------------------------
# Cases worked out by hand.


def test_hand_case_precision_envelope():
  # GT A [0,10], B [20,30]; predictions by score: TP (A), FP (elsewhere), TP (B).
  # precision 1, 1/2, 2/3; recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
  gt = [('v', 'x', 0.0, 10.0), ('v', 'x', 20.0, 30.0)]
  preds = [('v', 'x', 0.9, 0.0, 10.0), ('v', 'x', 0.8, 40.0, 50.0), ('v', 'x', 0.7, 20.0, 30.0)]
  r = run_ours(gt, preds, [0.5])
  assert r.ap[0, 0] == pytest.approx(5 / 6, abs=1e-15)


def test_hand_case_greedy_takes_highest_tiou_and_never_reassigns():
  # GT1 [0,10], GT2 [8,18]. p1 [5,15]: tIoU 1/3 (GT1), 7/13 (GT2) -> takes GT2.
  # p2 [9,19]: tIoU 1/19 (GT1), 9/11 (GT2, taken) -> false positive at 0.3 -> AP = 1/2.
  # At 0.6 p1 has no candidate, p2 takes GT2: precision 0, 1/2; recall 0, 1/2 -> AP = 1/4.
  gt = [('v', 'x', 0.0, 10.0), ('v', 'x', 8.0, 18.0)]
  preds = [('v', 'x', 0.9, 5.0, 15.0), ('v', 'x', 0.8, 9.0, 19.0)]
  r = run_ours(gt, preds, [0.3, 0.6])
  np.testing.assert_allclose(r.ap[:, 0], [0.5, 0.25], rtol=0, atol=1e-15)


def test_hand_case_duplicates_and_threshold_edges():
  # The same perfect prediction three times: one TP, two FP -> AP 1 (precision 1 at recall 1).
  gt = [('v', 'x', 2.0, 6.0)]
  preds = [('v', 'x', 0.5, 2.0, 6.0)] * 3
  assert run_ours(gt, preds, [1.0]).ap[0, 0] == 1.0
  # tIoU exactly 0.5 passes 0.5. Thresholds are used exactly as given: ActivityNet's preset
  # 0.9 is np.linspace(0.5, 0.95, 10)[8] = 0.8999999999999999 (the official code's value), which
  # the tIoU of [0, 1.9] and [0.1, 2.0] (1.8 / 2.0 in floats) reaches, while 0.9 does not.
  assert run_ours(gt, [('v', 'x', 1.0, 2.0, 4.0)], [0.5]).ap[0, 0] == 1.0
  anet_09 = evaluation.ACTIVITYNET.tiou_thresholds[8]
  assert anet_09 == np.linspace(0.5, 0.95, 10)[8] < 0.9
  r = run_ours([('v', 'x', 0.1, 2.0)], [('v', 'x', 1.0, 0.0, 1.9)], [0.9, anet_09])
  assert list(r.ap[:, 0]) == [0.0, 1.0]
  assert evaluation.THUMOS14.tiou_thresholds == tuple(np.linspace(0.1, 0.7, 7))


def test_tie_rule_equal_scores_keep_file_order():
  # Two predictions with the same score, one FP and one TP (npos 1). File order FP, TP:
  # precision 0, 1/2 -> AP 1/2. File order TP, FP -> AP 1.
  gt = [('v', 'x', 0.0, 10.0)]
  fp, tp = ('v', 'x', 0.5, 50.0, 60.0), ('v', 'x', 0.5, 0.0, 10.0)
  assert run_ours(gt, [fp, tp], [0.5]).ap[0, 0] == 0.5
  assert run_ours(gt, [tp, fp], [0.5]).ap[0, 0] == 1.0
  # Across videos: file order is the video order of the results object.
  gt = [('v1', 'x', 0.0, 10.0)]
  assert run_ours(gt, [('v0', 'x', 0.5, 0.0, 10.0), ('v1', 'x', 0.5, 0.0, 10.0)],
                  [0.5]).ap[0, 0] == 0.5


def test_tie_rule_equal_tiou_prefers_earlier_ground_truth():
  # p1 [5,15] has tIoU 1/3 with both [0,10] and [10,20]; it takes the one earlier in the file.
  # p2 [10,20] matches only [10,20]: TP if p1 took [0,10] (AP 1), else FP (AP 1/2).
  g1, g2 = ('v', 'x', 0.0, 10.0), ('v', 'x', 10.0, 20.0)
  preds = [('v', 'x', 0.9, 5.0, 15.0), ('v', 'x', 0.8, 10.0, 20.0)]
  assert run_ours([g1, g2], preds, [0.3]).ap[0, 0] == 1.0
  assert run_ours([g2, g1], preds, [0.3]).ap[0, 0] == 0.5


def test_zero_length_segments_have_tiou_zero():
  gt = [('v', 'x', 5.0, 5.0), ('v', 'x', 0.0, 10.0)]
  preds = [('v', 'x', 0.9, 5.0, 5.0),    # zero vs zero: 0/0 -> 0 (never a match)
           ('v', 'x', 0.8, 3.0, 3.0),    # zero-length inside [0, 10]: 0 / 10
           ('v', 'x', 0.7, 0.0, 10.0)]   # matches [0, 10]
  r = run_ours(gt, preds, [0.1])
  # precision 0, 0, 1/3; recall 0, 0, 1/2 -> AP 1/6.
  assert r.ap[0, 0] == pytest.approx(1 / 6, abs=1e-15)


def test_video_without_ground_truth_and_class_without_predictions():
  gt = [('v1', 'x', 0.0, 10.0), ('v1', 'y', 20.0, 30.0)]
  preds = [('v2', 'x', 0.9, 0.0, 10.0), ('v1', 'x', 0.8, 0.0, 10.0)]  # 'y' never predicted
  r = run_ours(gt, preds, [0.5])
  np.testing.assert_allclose(r.ap[0], [0.5, 0.0])
  assert r.map[0] == 0.25 and r.num_without_ground_truth == 1
  # A video of another subset counts as a video without ground truth too.
  gt_dict, results = to_files(gt, preds, other_subset_gt=[('v2', 'x', 0.0, 10.0)])
  r2 = evaluation.compute(formats.load_ground_truth(gt_dict, 'test'),
                          formats.validate_results(results), [0.5])
  assert r2.num_without_ground_truth == 1 and np.array_equal(r2.ap, r.ap)


def test_no_predictions_at_all():
  r = run_ours([('v', 'x', 0.0, 1.0)], [], [0.5])
  assert r.map.tolist() == [0.0] and r.num_predictions == 0


def test_empty_prediction_list_of_a_video():
  gt_dict, results = to_files([('v', 'x', 0.0, 1.0)], [('v', 'x', 1.0, 0.0, 1.0)])
  results['w'] = []
  r = evaluation.compute(formats.load_ground_truth(gt_dict),
                         formats.validate_results(results), [0.5])
  assert r.map.tolist() == [1.0]


def test_thresholds_kept_in_given_order():
  gt, preds = [('v', 'x', 0.0, 10.0)], [('v', 'x', 1.0, 0.0, 6.0)]
  r = run_ours(gt, preds, [0.7, 0.5, 0.6])
  assert r.ap[:, 0].tolist() == [0.0, 1.0, 1.0]
  assert r.tiou_thresholds == (0.7, 0.5, 0.6)


# ---------------------------------------------------------------------------------------------
# Ambiguous segments and unknown labels.


def test_ambiguous_drops_overlapping_predictions_of_the_same_video():
  rng = np.random.default_rng(5)
  for _ in range(40):
    gt, preds = random_case(rng, ties=True)
    amb = {'v0': [[2.0, 4.0]], 'v1': [[0.0, 1.0], [7.0, 7.0]], 'v_without_gt': [[0.0, 3.0]]}
    kept = [p for p in preds
            if not any(min(p[4], e) - max(p[3], s) > 0 for s, e in amb.get(p[0], []))]
    thresholds = [0.1, 0.5]
    ours = run_ours(gt, preds, thresholds, ambiguous=amb)
    _, ap = evaluation_reference.reference_ap(gt, kept, thresholds)
    np.testing.assert_allclose(ours.ap, ap, rtol=0, atol=1e-12)
    assert ours.num_ambiguous_dropped == len(preds) - len(kept)
    assert ours.num_predictions == len(kept)


def test_ambiguous_file_thumos14():
  amb = formats.load_ambiguous(AMBIGUOUS)
  assert sum(len(v) for v in amb.values()) == 99 and len(amb) == 37
  np.testing.assert_array_equal(amb['video_test_0000278'], [[0.0, 1.4], [95.7, 97.2]])
  gt = [('video_test_0000278', 'x', 0.0, 5.0)]
  preds = [('video_test_0000278', 'x', 0.9, 1.0, 2.0), ('video_test_0000278', 'x', 0.8, 0.0, 5.0)]
  by_file = run_ours(gt, preds, [0.5], ambiguous=AMBIGUOUS)
  by_arrays = run_ours(gt, preds, [0.5], ambiguous=amb)   # load_ambiguous's output works too
  assert by_file.num_ambiguous_dropped == by_arrays.num_ambiguous_dropped == 2
  assert by_file.map[0] == by_arrays.map[0] == 0.0


def test_unknown_labels_error_or_dropped_and_counted():
  gt = [('v', 'x', 0.0, 10.0)]
  preds = [('v', 'x', 0.9, 0.0, 10.0), ('v', 'zz', 0.95, 0.0, 10.0), ('v', 'zz', 0.1, 0, 1)]
  with pytest.raises(formats.InputError, match=r"results\['v'\]\[1\]\['label'\]: 'zz' is "
                     r"not a class with ground truth in subset 'test' \(2 predictions"):
    run_ours(gt, preds, [0.5])
  r = run_ours(gt, preds, [0.5], drop_unknown_labels=True)
  assert r.num_unknown_dropped == 2 and r.num_predictions == 1 and r.map[0] == 1.0
  # A class that has ground truth only in another subset is unknown too (ActivityNet rule).
  gt_dict, results = to_files(gt, [('v', 'y', 0.9, 0.0, 10.0)],
                              other_subset_gt=[('w', 'y', 0.0, 1.0)])
  with pytest.raises(formats.InputError, match="'y' is not a class"):
    evaluation.compute(formats.load_ground_truth(gt_dict), formats.validate_results(results),
                       [0.5])


# ---------------------------------------------------------------------------------------------
# Real files, the writer.


def test_um_ground_truth_loads():
  gt = formats.load_ground_truth(UM_GT, 'test')
  assert len(gt) == 3311 and len(gt.video_ids) == 210 and len(gt.class_names) == 20
  assert gt.segments[0].tolist() == [18.6, 24.8]          # strings "18.6", "24.8" in the file
  assert len(formats.load_ground_truth(UM_GT, 'train')) == 3007
  acm = formats.load_ground_truth(ACM_GT, 'test')
  assert len(acm.video_ids) == 212
  assert len(formats.load_ground_truth(ACM_GT, 'validation')) == 3007


def test_perfect_proposals_on_um_ground_truth_score_one(tmp_path):
  gt = formats.load_ground_truth(UM_GT, 'test')
  results = {}
  for v, l, (s, e) in zip(gt.video, gt.label, gt.segments.tolist()):
    results.setdefault(gt.video_ids[v], []).append(
        {'label': gt.class_names[l], 'score': 1.0, 'segment': [s, e]})
  path = tmp_path / 'p.json'
  assert formats.write_proposals(path, results) == 3311
  r = _score(UM_GT, str(path))
  assert r['map'] == [1.0] * 7 and r['average_map'] == 1.0 and r['num_predictions'] == 3311


def test_writer_round_trip_and_format(tmp_path):
  results = {'v1': [{'label': 'x', 'score': np.float32(0.5), 'segment': [np.float64(1.0), 2]},
                    {'label': 'y', 'score': 3, 'segment': ('4.5', 6.0), 'extra': 1}],
             'v2': []}
  path = tmp_path / 'p.json'
  formats.write_proposals(path, results)
  data = json.loads(path.read_text())
  assert set(data) == {'version', 'results', 'external_data'} and data['external_data'] == {}
  assert data['results'] == {'v1': [{'label': 'x', 'score': 0.5, 'segment': [1.0, 2.0]},
                                    {'label': 'y', 'score': 3.0, 'segment': [4.5, 6.0]}],
                             'v2': []}
  p = formats.load_proposals(path)
  assert p.video_ids == ('v1', 'v2') and p.scores.tolist() == [0.5, 3.0]
  assert p.location(1) == "results['v1'][1]"


def test_writer_refuses_invalid_results_and_keeps_old_file(tmp_path):
  path = tmp_path / 'p.json'
  path.write_text('old')
  with pytest.raises(formats.InputError, match=r"results\['v'\]\[0\]\['score'\]"):
    formats.write_proposals(path, {'v': [{'label': 'x', 'score': float('nan'),
                                          'segment': [0, 1]}]})
  assert path.read_text() == 'old' and os.listdir(tmp_path) == ['p.json']


def test_write_json_unwritable_leaves_nothing(tmp_path):
  with pytest.raises(formats.InputError, match='no_dir/o.json: cannot write: No such file'):
    formats.write_json(tmp_path / 'no_dir' / 'o.json', {'a': 1})
  (tmp_path / 'd').mkdir()
  with pytest.raises(formats.InputError, match='cannot write'):
    formats.write_json(tmp_path / 'd', {'a': 1})   # a directory is in the way
  assert sorted(os.listdir(tmp_path)) == ['d'] and not os.listdir(tmp_path / 'd')


def _score(ground_truth, proposals, tiou=evaluation.THUMOS14.tiou_thresholds):
  """What evaluate.py's file mode computes, as the results-JSON dict."""
  return evaluation.compute(formats.load_ground_truth(ground_truth, subset='test'),
                            formats.load_proposals(proposals), tiou).to_dict()


def test_the_loaders_accept_paths_and_parsed_dicts(tmp_path):
  gt = [('v1', 'x', 0.0, 10.0), ('v1', 'y', 20.0, 30.0)]
  preds = [('v1', 'x', 0.9, 1.0, 10.0), ('v1', 'y', 0.8, 25.0, 30.0)]
  gt_dict, results = to_files(gt, preds)
  for entry in gt_dict['database'].values():
    entry['duration'] = 40.0    # the shape data.ground_truth() produces
  by_dicts = _score(gt_dict, {'results': results}, [0.5, 0.6])
  (tmp_path / 'gt.json').write_text(json.dumps(gt_dict))
  formats.write_proposals(tmp_path / 'p.json', results)
  by_paths = _score(str(tmp_path / 'gt.json'), tmp_path / 'p.json', [0.5, 0.6])
  by_objects = evaluation.compute(formats.load_ground_truth(gt_dict),
                                  formats.validate_results(results), [0.5, 0.6]).to_dict()
  assert by_dicts == by_paths == by_objects
  assert by_dicts['ap_per_class'] == {'x': [1.0, 1.0], 'y': [1.0, 0.0]}
  assert by_dicts['map'] == [1.0, 0.5] and by_dicts['average_map'] == 0.75


def test_fast_and_slow_validation_paths_agree():
  # validate_results checks whole lists at once and only walks items to name a problem; both
  # must accept exactly the same predictions.
  values = [0, 1.5, -1.0, '2.5', 'abc', ' 3 ', True, None, float('nan'), float('inf'), 10**400,
            np.float32(2.0), np.int64(4), [1.0]]
  rng = np.random.default_rng(6)
  for _ in range(400):
    seg_kind = rng.integers(5)
    if seg_kind == 0:
      seg = [values[rng.integers(len(values))], values[rng.integers(len(values))]]
    elif seg_kind == 1:
      seg = [1.0, 2.0, 3.0]
    elif seg_kind == 2:
      seg = {'a': 1, 'b': 2}
    elif seg_kind == 3:
      seg = (1.0, 2.0)
    else:
      seg = [float(rng.integers(0, 5)), float(rng.integers(0, 5))]
    pred = {'label': 'x' if rng.random() < 0.9 else 3,
            'score': values[rng.integers(len(values))] if rng.random() < 0.3 else 0.5,
            'segment': seg}
    results = {'v': [{'label': 'x', 'score': 0.1, 'segment': [0, 1]}, pred]}
    slow_ok = formats._prediction_problem(pred) is None
    try:
      formats.validate_results(results)
      fast_ok = True
    except formats.InputError as e:
      fast_ok = False
      assert str(e).startswith("results: results['v'][1]"), str(e)
    assert fast_ok == slow_ok, pred


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line naming the file and the problem.

GOOD_PRED = {'label': 'x', 'score': 0.5, 'segment': [1.0, 2.0]}


def _gt(annotations=None, **entry):
  e = {'subset': 'test', 'annotations': [{'segment': [1.0, 2.0], 'label': 'x'}]
       if annotations is None else annotations}
  e.update(entry)
  return {'database': {'v': e}}


BAD_GROUND_TRUTH = [
    ('not json', '{"database": ', 'not valid JSON'),
    ('top level', '[1, 2]', 'top level must be a JSON object'),
    ('no database', {'version': 1}, "missing key 'database'"),
    ('database list', {'database': []}, "'database' must be an object"),
    ('no subset', {'database': {'v': {'annotations': []}}}, "database['v']: missing key 'subset'"),
    ('no annotations', {'database': {'v': {'subset': 'test'}}}, "missing key 'annotations'"),
    ('no segment', _gt([{'label': 'x'}]), "['annotations'][0]: missing key 'segment'"),
    ('no label', _gt([{'segment': [0, 1]}]), "missing key 'label'"),
    ('label not str', _gt([{'segment': [0, 1], 'label': 3}]), "['label']: must be a string"),
    ('bad string', _gt([{'segment': ['1.0', 'abc'], 'label': 'x'}]),
     "database['v']['annotations'][0]['segment']: 'abc' is not a number"),
    ('nan string', _gt([{'segment': ['nan', '2'], 'label': 'x'}]), "'nan' is not finite"),
    ('three numbers', _gt([{'segment': [0, 1, 2], 'label': 'x'}]), 'must be a list [start, end]'),
    ('reversed', _gt([{'segment': ['13.5', '12.0'], 'label': 'x'}]), 'end 12.0 < start 13.5'),
    ('negative', _gt([{'segment': [-1.0, 2.0], 'label': 'x'}]), 'start -1.0 is negative'),
    ('bool', _gt([{'segment': [True, 2.0], 'label': 'x'}]), 'True is not a number'),
    ('no such subset', _gt(subset='validation'), "no videos with subset 'test' (subsets "
     'present: validation)'),
    ('no segments', _gt([]), "videos of subset 'test' have no ground-truth segments"),
]


@pytest.mark.parametrize('name,content,message', BAD_GROUND_TRUTH,
                         ids=[c[0] for c in BAD_GROUND_TRUTH])
def test_bad_ground_truth(tmp_path, name, content, message):
  del name
  path = tmp_path / 'gt.json'
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(formats.InputError) as e:
    formats.load_ground_truth(path)
  assert str(e.value).startswith(f'{path}: ') and message in str(e.value)
  assert '\n' not in str(e.value)


def test_unreadable_files(tmp_path):
  for loader in (formats.load_ground_truth, formats.load_proposals,
                 formats.load_ambiguous):
    with pytest.raises(formats.InputError, match='missing.json: cannot read: No such file'):
      loader(tmp_path / 'missing.json')
  with pytest.raises(formats.InputError, match='not valid JSON'):
    (tmp_path / 'bin.json').write_bytes(b'\xff\xfe{')
    formats.load_proposals(tmp_path / 'bin.json')


def _results(pred):
  return {'results': {'video_test_0000004': [GOOD_PRED, GOOD_PRED, GOOD_PRED, pred]}}


BAD_PROPOSALS = [
    ('not json', '{"results": {', 'not valid JSON'),
    ('top level', '"x"', 'top level must be a JSON object'),
    ('no results', {'version': '1'}, "missing key 'results'"),
    ('results list', {'results': []}, "'results' must be an object"),
    ('video not list', {'results': {'v': {'a': 1}}}, "results['v']: must be a list"),
    ('pred not object', _results([1, 2]), "results['video_test_0000004'][3]: must be an object"),
    ('no score', _results({'label': 'x', 'segment': [0, 1]}), "[3]: missing key 'score'"),
    ('no segment', _results({'label': 'x', 'score': 1}), "[3]: missing key 'segment'"),
    ('no label', _results({'score': 1, 'segment': [0, 1]}), "[3]: missing key 'label'"),
    ('label not str', _results({'label': 7, 'score': 1, 'segment': [0, 1]}),
     "['label']: must be a string"),
    ('reversed', _results({'label': 'x', 'score': 1, 'segment': [13.5, 12.0]}),
     "results['video_test_0000004'][3]['segment']: end 12.0 < start 13.5"),
    ('negative', _results({'label': 'x', 'score': 1, 'segment': [-0.5, 12.0]}),
     "[3]['segment']: start -0.5 is negative"),
    ('one number', _results({'label': 'x', 'score': 1, 'segment': [1.0]}),
     "[3]['segment']: must be a list [start, end]"),
    ('segment number', _results({'label': 'x', 'score': 1, 'segment': 4}),
     "[3]['segment']: must be a list [start, end]"),
    ('segment null', _results({'label': 'x', 'score': 1, 'segment': [None, 1]}),
     "[3]['segment']: None is not a number"),
    ('segment text', _results({'label': 'x', 'score': 1, 'segment': ['a', 1]}),
     "[3]['segment']: 'a' is not a number"),
    ('segment NaN', '{"results": {"v": [{"label": "x", "score": 1, "segment": [NaN, 1]}]}}',
     "[0]['segment']: nan is not finite"),
    ('segment overflow', '{"results": {"v": [{"label": "x", "score": 1, "segment": [0, 1e400]}]}}',
     "[0]['segment']: inf is not finite"),
    ('score NaN', '{"results": {"v": [{"label": "x", "score": NaN, "segment": [0, 1]}]}}',
     "results['v'][0]['score']: nan is not finite"),
    ('score Infinity',
     '{"results": {"v": [{"label": "x", "score": -Infinity, "segment": [0, 1]}]}}',
     "['score']: -inf is not finite"),
    ('score string', _results({'label': 'x', 'score': '0.5', 'segment': [0, 1]}),
     "['score']: must be a number, got '0.5'"),
    ('score bool', _results({'label': 'x', 'score': True, 'segment': [0, 1]}),
     "['score']: must be a number, got True"),
]


@pytest.mark.parametrize('name,content,message', BAD_PROPOSALS,
                         ids=[c[0] for c in BAD_PROPOSALS])
def test_bad_proposals(tmp_path, name, content, message):
  del name
  path = tmp_path / 'p.json'
  path.write_text(content if isinstance(content, str) else json.dumps(content))
  with pytest.raises(formats.InputError) as e:
    formats.load_proposals(path)
  assert str(e.value).startswith(f'{path}: ') and message in str(e.value), str(e.value)
  assert '\n' not in str(e.value)


@pytest.mark.parametrize('content,message', [
    ('video_test_0000278  0.0\n', ':1: expected "video_id start end"'),
    ('\nvideo_test_0000278  0.0 x\n', ":2: 'x' is not a number"),
    ('v 5 4\n', ':1: end 4.0 < start 5.0'),
])
def test_bad_ambiguous_file(tmp_path, content, message):
  path = tmp_path / 'amb.txt'
  path.write_text(content)
  with pytest.raises(formats.InputError, match=message.replace('[', r'\[')):
    formats.load_ambiguous(path)


@pytest.mark.parametrize('thresholds,message', [
    ([], 'empty'), ([0.0], "0.0 is not in \\(0, 1\\]"), ([0.5, 1.5], '1.5 is not in'),
    ([float('nan')], 'nan is not in'), (['a'], 'not a list of numbers')])
def test_bad_thresholds(thresholds, message):
  with pytest.raises(formats.InputError, match=message):
    run_ours([('v', 'x', 0.0, 1.0)], [], thresholds)


# ---------------------------------------------------------------------------------------------
# The command line.


@pytest.fixture
def cli(capsys):
  import evaluate  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  def run(*args):
    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(['evaluate.py', *args])
    try:
      evaluate.main(argv)
      code = 0
    except SystemExit as e:
      code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
  yield run
  flags.FLAGS.unparse_flags()


@pytest.fixture
def files(tmp_path):
  gt = [('v1', 'x', 0.0, 10.0), ('v1', 'y', 20.0, 30.0), ('v2', 'x', 5.0, 6.0)]
  preds = [('v1', 'x', 0.9, 0.0, 10.0), ('v1', 'y', 0.8, 21.0, 30.0), ('v2', 'x', 0.7, 5.0, 5.5),
           ('v3', 'x', 0.6, 0.0, 1.0)]
  gt_dict, results = to_files(gt, preds)
  (tmp_path / 'gt.json').write_text(json.dumps(gt_dict))
  formats.write_proposals(tmp_path / 'p.json', results)
  (tmp_path / 'amb.txt').write_text('v2  5.2 5.4\n')
  return tmp_path


def test_cli_writes_table_and_json(cli, files):
  out_path = files / 'out.json'
  code, out, err = cli('--ground_truth', str(files / 'gt.json'), '--proposals',
                       str(files / 'p.json'), '--output', str(out_path), '--per_class')
  assert code == 0 and not err
  result = json.loads(out_path.read_text())
  assert list(result) == ['tiou_thresholds', 'map', 'average_map', 'ap_per_class',
                          'num_ground_truth', 'num_predictions']
  assert result['tiou_thresholds'] == list(evaluation.THUMOS14.tiou_thresholds)
  assert result['num_ground_truth'] == 3 and result['num_predictions'] == 4
  assert set(result['ap_per_class']) == {'x', 'y'}
  assert result['average_map'] == pytest.approx(np.mean(result['map']))
  assert all(0 <= m <= 1 for m in result['map'])
  for text in ('avg 0.1:0.5', 'avg 0.3:0.7', 'avg 0.1:0.7', 'not used (ActivityNet / UM',
               '1 on videos without ground truth', '0.30', 'class'):
    assert text in out, out


def test_cli_presets_custom_thresholds_and_ambiguous(cli, files):
  args = ['--ground_truth', str(files / 'gt.json'), '--proposals', str(files / 'p.json')]
  code, out, _ = cli(*args, '--protocol', 'activitynet')
  assert code == 0 and 'avg 0.5:0.95' in out and '0.95' in out
  code, out, _ = cli(*args, '--tiou', '0.5,0.25', '--output', str(files / 'o.json'))
  assert code == 0 and 'mean (2)' in out and 'avg 0.1' not in out
  assert json.loads((files / 'o.json').read_text())['tiou_thresholds'] == [0.5, 0.25]
  code, out, _ = cli(*args, '--ambiguous', str(files / 'amb.txt'))
  assert code == 0 and '1 overlapping ambiguous segments dropped' in out
  assert 'W-TALC convention' in out


@pytest.mark.parametrize('extra,message,status', [
    ([], 'error: bad command line: --ground_truth and --proposals are both required', 2),
    (['--tiou', '0.5,x'], "error: bad command line: --tiou: 'x' is not a number", 2),
    (['--tiou', '0'], 'error: bad command line: --tiou: 0 is not in (0, 1]', 2),
    (['--tiou', '0.5,1.5'], 'error: bad command line: --tiou: 1.5 is not in (0, 1]', 2),
    (['--tiou', 'nan'], 'error: bad command line: --tiou: nan is not in (0, 1]', 2),
    (['--subset', 'val'], "no videos with subset 'val'", 1),
    (['--ambiguous', 'nope.txt'], 'nope.txt: cannot read', 1),
    (['--output', '/nonexistent_dir/o.json'], '/nonexistent_dir/o.json: cannot write', 1),
])
def test_cli_errors(cli, files, extra, message, status):
  """A mistake on the command line: status 2; a file that is wrong or cannot be written: 1."""
  args = [] if not extra else ['--ground_truth', str(files / 'gt.json'), '--proposals',
                               str(files / 'p.json')]
  code, out, err = cli(*args, '--output', str(files / 'o.json'), *extra)  # a later flag wins
  assert code == status and not out and message in err and err.count('\n') == 1, err
  assert not (files / 'o.json').exists()


def test_cli_unknown_label_then_dropped(cli, files, tmp_path):
  gt_dict, results = to_files([('v', 'x', 0.0, 1.0)], [('v', 'q', 0.5, 0.0, 1.0),
                                                       ('v', 'x', 0.4, 0.0, 1.0)])
  (tmp_path / 'g2.json').write_text(json.dumps(gt_dict))
  (tmp_path / 'p2.json').write_text(json.dumps({'results': results}))
  args = ['--ground_truth', str(tmp_path / 'g2.json'), '--proposals', str(tmp_path / 'p2.json')]
  code, _, err = cli(*args)
  assert code == 1 and "'q' is not a class" in err
  code, out, _ = cli(*args, '--drop_unknown_labels')
  assert code == 0 and '1 with unknown labels dropped' in out


def test_cli_subprocess_bad_json_one_line_no_traceback_no_jax(files):
  (files / 'bad.json').write_text('{"results": {"v": [{"label": "x", "score": 1, "segment": '
                                  '[3, 2]}]}}')
  script = (
      'import runpy, sys\n'
      f'sys.argv = ["evaluate.py", "--ground_truth", {str(files / "gt.json")!r}, '
      f'"--proposals", sys.argv[1], "--output", {str(files / "o.json")!r}]\n'
      'try:\n'
      '  runpy.run_path("evaluate.py", run_name="__main__")\n'
      'except SystemExit as e:\n'
      '  code = e.code\n'
      'assert "jax" not in sys.modules and "jaxlib" not in sys.modules, "jax imported"\n'
      'sys.exit(code)\n')
  env = dict(os.environ, PYTHONPATH=REPO)
  ok = subprocess.run([sys.executable, '-c', script, str(files / 'p.json')], cwd=REPO, env=env,
                      capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert 'avg 0.1:0.7' in ok.stdout and (files / 'o.json').exists()
  os.remove(files / 'o.json')
  bad = subprocess.run([sys.executable, '-c', script, str(files / 'bad.json')], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr
  assert bad.stderr == (f"error: {files / 'bad.json'}: results['v'][0]['segment']: "
                        'end 2.0 < start 3.0\n')
  assert not (files / 'o.json').exists()

