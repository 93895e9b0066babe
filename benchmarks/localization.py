"""Times aumn_jax.localization on a THUMOS14-size test set (host NumPy, one core).

Run:  python benchmarks/localization.py [--json OUT] [--repeats 3] [--durations PATH]

Setup (printed, and stored in the JSON): the 212 THUMOS14 test videos with their real
durations (W-TALC `duration.npy`, copied to ../shared/data/thumos14_um/durations.json),
T = ceil(duration * 25 / 16) snippets at 25 fps, stride 16 (median 254, max 2615, 71,903 in
all); `--durations ''` draws 212 lengths log-normally instead (median 250, clipped to
[24, 2615]). C = 20 classes, config.localization of configs/thumos.py (scale 24, the 17
thresholds 0.10:0.05:0.90, max 200 proposals). Two synthetic CAS per video, both softmax
over C+1 with background last:
  smooth  what a trained model's suppressed CAS looks like: 1 video class (2 in 1 of 6
          videos, THUMOS's label counts), about T / 21 instances (THUMOS: 3358 in 71,903
          snippets) of log-normal length (median 5 snippets = 3.2 s) where the class logit
          is raised, smoothed noise elsewhere;
  noisy   white-noise logits with the same instances: many short threshold crossings,
          a stress case for the run count and NMS.
Each is localized with nms='nms' and nms='soft_nms'. Times are the best of --repeats runs
of `localization.localize` over all videos (CAS generation not timed).

Not measured here: the accelerator forward pass and the JSON export.
"""
import json
import math
import os
import time

from absl import flags
import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from aumn_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import localization  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import thumos  # pylint: disable=g-import-not-at-top,wrong-import-position

_JSON = flags.DEFINE_string('json', None, 'Write the results as JSON to this path.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed runs per row (the best is reported).',
                                lower_bound=1)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the synthetic CAS.', lower_bound=0)
_DURATIONS = flags.DEFINE_string(
    'durations', os.path.join(os.path.dirname(_REPO), 'shared', 'data', 'thumos14_um',
                              'durations.json'),
    "THUMOS14 durations.json (test videos are used); '' draws log-normal lengths.")

NUM_CLASSES = 20
NUM_VIDEOS = 212
FPS, STRIDE = 25.0, 16


def video_lengths(path, rng):
  """(snippets [212], seconds [212], description): real test durations or log-normal."""
  if path:
    with open(path, encoding='utf-8') as f:
      durations = json.load(f)
    test = sorted(k for k in durations if k.startswith('video_test_'))
    seconds = np.array([durations[k]['duration'] for k in test])
    return (np.ceil(seconds * FPS / STRIDE).astype(int), seconds,
            f'real THUMOS14 test durations ({len(test)} videos, {path})')
  lengths = np.clip(np.round(rng.lognormal(math.log(250), 0.8, NUM_VIDEOS)), 24, 2615)
  return (lengths.astype(int), lengths * STRIDE / FPS,
          'log-normal lengths (median 250, sigma 0.8, [24, 2615])')


def synthetic_video(t, rng, kind):
  """(cas_probs [t, C+1], video_probs [C+1]) for one video."""
  n_cls = 2 if rng.random() < 1 / 6 else 1
  classes = rng.choice(NUM_CLASSES, n_cls, replace=False)
  if kind == 'smooth':
    noise = rng.normal(0.0, 1.0, (t + 4, NUM_CLASSES + 1))
    logits = (noise[:-4] + noise[1:-3] + noise[2:-2] + noise[3:-1] + noise[4:]) / 5 * 1.5
  else:
    logits = rng.normal(0.0, 1.5, (t, NUM_CLASSES + 1))
  logits[:, NUM_CLASSES] += 3.0  # background dominates outside actions
  for _ in range(rng.poisson(t / 21)):
    length = max(1, int(round(rng.lognormal(math.log(5), 0.7))))
    start = rng.integers(0, max(1, t - length))
    logits[start:start + length, rng.choice(classes)] += rng.uniform(4.0, 7.0)
    logits[start:start + length, NUM_CLASSES] -= 2.0
  cas = np.exp(logits - logits.max(axis=1, keepdims=True))
  cas /= cas.sum(axis=1, keepdims=True)
  video_probs = np.full(NUM_CLASSES + 1, 0.01)
  video_probs[classes] = rng.uniform(0.3, 0.9, n_cls)
  return cas.astype(np.float32), video_probs


def candidate_runs(videos, cfg):
  """Distinct threshold runs before NMS (what the NMS stage has to sort through)."""
  total = 0
  for v in videos:
    classes = localization.select_classes(v.video_probs, NUM_CLASSES, cfg.class_threshold)
    up = localization.upsample(v.cas_probs[:, classes], int(cfg.scale)).T
    total += localization.find_runs(up, cfg.thresholds)[0].size
  return total


@cli.user_errors
def main(argv):
  del argv
  cli.check_output_paths(json=_JSON.value)
  rng = np.random.default_rng(_SEED.value)
  lengths, seconds, source = video_lengths(_DURATIONS.value, rng)
  names = [f'class{i}' for i in range(NUM_CLASSES)]
  base = thumos.get_config().localization
  print(f'{len(lengths)} videos, {lengths.sum()} snippets (median {np.median(lengths):.0f}, '
        f'max {lengths.max()}), {NUM_CLASSES} classes; {source}')
  print(f'scale {base.scale}, {len(base.thresholds)} thresholds {base.thresholds[0]}..'
        f'{base.thresholds[-1]}, max_proposals {base.max_proposals}; best of '
        f'{_REPEATS.value}\n')
  header = (f'{"cas":<7}{"nms":<9}{"classes":>8}{"runs":>9}{"kept":>8}{"total s":>9}'
            f'{"ms/video":>10}{"max ms":>8}')
  print(header)
  print('-' * len(header))
  rows = []
  for kind in ('smooth', 'noisy'):
    videos = []
    for i, (t, duration) in enumerate(zip(lengths, seconds)):
      cas, video_probs = synthetic_video(int(t), rng, kind)
      videos.append(localization.VideoScores(f'v{i}', cas, video_probs, FPS, STRIDE,
                                             float(duration)))
    runs = candidate_runs(videos, base)
    n_classes = sum(localization.select_classes(v.video_probs, NUM_CLASSES,
                                                base.class_threshold).size
                    for v in videos)
    for nms_mode in ('nms', 'soft_nms'):
      cfg = thumos.get_config().localization
      cfg.nms = nms_mode
      best_total, per_video = math.inf, None
      for _ in range(_REPEATS.value):
        times = []
        for video in videos:
          start = time.perf_counter()
          localization.localize([video], cfg, names)
          times.append(time.perf_counter() - start)
        if sum(times) < best_total:
          best_total, per_video = sum(times), np.array(times)
      kept_total = sum(len(p) for p in localization.localize(videos, cfg, names).values())
      row = dict(cas=kind, nms=nms_mode, videos=len(videos), snippets=int(lengths.sum()),
                 video_classes=n_classes, candidate_runs=runs, proposals=kept_total,
                 total_s=best_total, ms_per_video=1e3 * best_total / len(videos),
                 max_ms_per_video=1e3 * float(per_video.max()))
      rows.append(row)
      print(f'{kind:<7}{nms_mode:<9}{n_classes:>8}{runs:>9}{kept_total:>8}'
            f'{best_total:>9.2f}{row["ms_per_video"]:>10.1f}{row["max_ms_per_video"]:>8.1f}')
  print('\nclasses: video classes localized (split total); runs: distinct threshold runs '
        'before NMS; kept: proposals written.')
  if _JSON.value:
    setup = dict(source=source, videos=len(lengths), snippets=int(lengths.sum()),
                 median_snippets=float(np.median(lengths)), max_snippets=int(lengths.max()),
                 num_classes=NUM_CLASSES, fps=FPS, snippet_stride=STRIDE,
                 localization=base.to_dict(), repeats=_REPEATS.value, seed=_SEED.value)
    with open(_JSON.value, 'w', encoding='utf-8') as f:
      json.dump(dict(setup=setup, rows=rows), f, indent=2)
    print(f'wrote {_JSON.value}')


if __name__ == '__main__':
  cli.run(main)
