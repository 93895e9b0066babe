r"""Times the NumPy evaluator (formats.py + evaluation.py) on THUMOS- and ActivityNet-size cases.

  python -m benchmarks.evaluator [--json OUT.json] [--repeats 5] [--cases thumos,activitynet]
      [--skip_references]

Cases are synthetic but shaped like the datasets (seeded, so every run scores the same files):
  thumos:      212 videos, 20 classes, ~3,400 ground truths (0.2-90 s, up to ~200 in a video),
               100,000 predictions, tIoU 0.1:0.1:0.7;
  activitynet: 4,926 videos, 200 classes, ~7,600 ground truths (long: 5-90 % of the video),
               ~500,000 predictions, tIoU 0.50:0.05:0.95.
Predictions mix jittered copies of ground truths, random segments of the video's classes and of
other classes, so some score well, many are false positives, many overlap several ground truths.

"ours" = formats.load_ground_truth + load_proposals (json parse included) + evaluation.compute,
median of --repeats.
References (once, on already-parsed rows; aumn_jax/evaluation_reference.py, the tests' own):
  simple:   the plain-Python protocol definition the tests check against;
  anet:     the official ActivityNet per-prediction loop (compute_average_precision_detection,
            transcribed with pandas replaced by lists, so faster than the real one).
Both report max |AP difference| to ours: ~1e-15 for "simple" (Python's sequential sum against
NumPy's pairwise one); for "anet", 0 unless its unstable tie-breaking (equal tIoUs here, from the
rounded segments) happens to order a tie differently.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags
import numpy as np


from aumn_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import evaluation  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import evaluation_reference  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import formats  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('json', None, 'Write the measurements here as JSON.')
flags.DEFINE_integer('repeats', 5, 'Timed runs of our evaluator per case (median reported).',
                     lower_bound=1)
flags.DEFINE_list('cases', ['thumos', 'activitynet'], 'Cases to run.')
flags.DEFINE_bool('skip_references', False, 'Time only our evaluator.')

CASES = {
    'thumos': dict(videos=212, classes=20, ground_truth=3400, predictions=100_000,
                   tiou=evaluation.THUMOS14.tiou_thresholds, seed=0),
    'activitynet': dict(videos=4926, classes=200, ground_truth=7600, predictions=500_000,
                        tiou=evaluation.ACTIVITYNET.tiou_thresholds, seed=1),
}


def make_case(name, videos, classes, ground_truth, predictions, seed, **unused):
  """(gt dict, proposals dict) shaped like THUMOS14 or ActivityNet."""
  del unused
  rng = np.random.default_rng(seed)
  class_names = [f'class_{c:03d}' for c in range(classes)]
  thumos = name == 'thumos'
  if thumos:
    durations = np.clip(rng.lognormal(np.log(160), 0.9, videos), 15, 1700)
    weights = rng.lognormal(0, 1.0, videos)
    gt_counts = np.maximum(1, np.round(weights / weights.sum() * ground_truth)).astype(int)
  else:
    durations = np.clip(rng.lognormal(np.log(120), 0.6, videos), 10, 600)
    gt_counts = 1 + rng.poisson(ground_truth / videos - 1, videos)
  database, results = {}, {}
  pred_counts = rng.multinomial(predictions, np.full(videos, 1 / videos))
  for v in range(videos):
    vid = f'video_{v:07d}'
    dur = float(durations[v])
    own = list(rng.choice(classes, 1 if rng.random() < 0.85 else 2, replace=False))
    anns = []
    for _ in range(gt_counts[v]):
      if thumos:
        length = float(np.clip(rng.lognormal(np.log(3.2), 0.8), 0.2, min(90, dur)))
      else:
        length = float(rng.uniform(0.05, 0.9) * dur)
      start = float(rng.uniform(0, dur - length))
      anns.append({'segment': [round(start, 1), round(start + length, 1)],
                   'label': class_names[own[rng.integers(len(own))]]})
    database[vid] = {'subset': 'test', 'duration': dur, 'annotations': anns}
    preds = []
    others = rng.choice(classes, 3, replace=False)
    for _ in range(pred_counts[v]):
      u = rng.random()
      if u < 0.55:   # a jittered copy of a ground truth
        ann = anns[rng.integers(len(anns))]
        s, e = ann['segment']
        length = e - s
        s = max(0.0, s + rng.normal(0, 0.3) * length)
        e = max(s, e + rng.normal(0, 0.3) * length)
        label = ann['label']
        score = float(1 / (1 + np.exp(-rng.normal(0.5, 1.0))))
      else:          # random segment, the video's classes or others
        length = float(rng.lognormal(np.log(5 if thumos else 0.2 * dur), 0.8))
        s = float(rng.uniform(0, max(dur - length, 1.0)))
        e = s + length
        label = class_names[own[0] if u < 0.85 else others[rng.integers(3)]]
        score = float(1 / (1 + np.exp(-rng.normal(-0.5, 1.0))))
      preds.append({'label': label, 'score': score, 'segment': [round(s, 2), round(e, 2)]})
    results[vid] = preds
  return {'database': database}, {'version': 'VERSION 1.3', 'results': results,
                                  'external_data': {}}


def rows(gt_dict, proposals):
  gt = [(v, a['label'], float(a['segment'][0]), float(a['segment'][1]))
        for v, entry in gt_dict['database'].items() for a in entry['annotations']]
  preds = [(v, p['label'], p['score'], float(p['segment'][0]), float(p['segment'][1]))
           for v, lst in proposals['results'].items() for p in lst]
  return gt, preds


def run_case(name, spec, tmp):
  gt_dict, proposals = make_case(name, **spec)
  gt_path, p_path = os.path.join(tmp, f'{name}_gt.json'), os.path.join(tmp, f'{name}_p.json')
  with open(gt_path, 'w') as f:
    json.dump(gt_dict, f)
  with open(p_path, 'w') as f:
    json.dump(proposals, f)
  thresholds = spec['tiou']

  totals, loads, computes, cpus = [], [], [], []
  for _ in range(FLAGS.repeats):
    c0, t0 = time.process_time(), time.perf_counter()
    gt = formats.load_ground_truth(gt_path, 'test')
    props = formats.load_proposals(p_path)
    t1 = time.perf_counter()
    result = evaluation.compute(gt, props, thresholds)
    t2 = time.perf_counter()
    cpus.append(time.process_time() - c0)
    totals.append(t2 - t0)
    loads.append(t1 - t0)
    computes.append(t2 - t1)
  out = dict(
      case=name, videos=len(gt.video_ids), classes=len(gt.class_names),
      ground_truth=len(gt), predictions=len(props), thresholds=len(thresholds),
      proposals_mb=os.path.getsize(p_path) / 2**20,
      ours_s=statistics.median(totals), ours_load_s=statistics.median(loads),
      ours_compute_s=statistics.median(computes), ours_min_s=min(totals),
      ours_cpu_s=statistics.median(cpus), average_map=result.average_map)
  if not FLAGS.skip_references:
    gt_rows, pred_rows = rows(gt_dict, proposals)
    t0 = time.perf_counter()
    classes, ap = evaluation_reference.reference_ap(gt_rows, pred_rows, list(thresholds))
    out['simple_s'] = time.perf_counter() - t0
    assert classes == list(result.class_names)
    out['simple_max_abs_diff'] = float(np.abs(np.asarray(ap) - result.ap).max())
    t0 = time.perf_counter()
    classes, ap, _, _ = evaluation_reference.official_ap(gt_rows, pred_rows, np.asarray(thresholds))
    out['anet_s'] = time.perf_counter() - t0
    out['anet_max_abs_diff'] = float(np.abs(ap - result.ap).max())
  return out


def format_row(r):
  ref = lambda key: f'{r[key]:8.2f}' if key in r else '       -'
  diff = lambda key: f'{r[key]:8.1e}' if key in r else '       -'
  speed = f'{r["anet_s"] / r["ours_s"]:7.0f}x' if 'anet_s' in r else '       -'
  return (f'{r["case"]:<12s}{r["videos"]:>6d}{r["classes"]:>5d}{r["ground_truth"]:>7d}'
          f'{r["predictions"]:>8d}{r["thresholds"]:>3d} {r["ours_s"]:7.3f} {r["ours_cpu_s"]:6.3f}'
          f' {r["ours_load_s"]:6.3f}'
          f' {r["ours_compute_s"]:6.3f} {ref("simple_s")} {diff("simple_max_abs_diff")}'
          f' {ref("anet_s")} {diff("anet_max_abs_diff")} {speed}  {100 * r["average_map"]:5.2f}')


@cli.user_errors
def main(argv):
  del argv
  unknown = set(FLAGS.cases) - set(CASES)
  if unknown:
    raise app.UsageError(f'--cases: unknown {sorted(unknown)}; known: {list(CASES)}')
  cli.check_output_paths(json=FLAGS.json)
  print(f'NumPy {np.__version__}, {os.cpu_count()} CPUs; ours = median of {FLAGS.repeats} runs, '
        'JSON loading included; references once, on parsed rows (no JSON).')
  header = (f'{"case":<12s}{"videos":>6s}{"cls":>5s}{"GT":>7s}{"preds":>8s}{"K":>3s}'
            f' {"ours s":>7s} {"cpu s":>6s} {"load":>6s} {"match":>6s}'
            f' {"simple s":>8s} {"|dAP|":>8s}'
            f' {"anet s":>8s} {"|dAP|":>8s} {"speedup":>8s}  {"mAP%":>5s}')
  print(header)
  measured = []
  with tempfile.TemporaryDirectory() as tmp:
    for name in FLAGS.cases:
      r = run_case(name, CASES[name], tmp)
      measured.append(r)
      print(format_row(r), flush=True)
  print('ours s = wall time, cpu s = its process CPU time (the machine is shared); load = read +'
        ' parse + validate both files; match = pairs, greedy matching, AP; speedup = anet / ours.')
  print(f'load average now: {", ".join(f"{x:.2f}" for x in os.getloadavg())}')
  if FLAGS.json:
    formats.write_json(FLAGS.json, {'numpy': np.__version__, 'cpus': os.cpu_count(),
                                    'repeats': FLAGS.repeats, 'cases': measured})
    print(f'wrote {FLAGS.json}')


if __name__ == '__main__':
  cli.run(main)
