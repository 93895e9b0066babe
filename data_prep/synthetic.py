"""Synthetic I3D-like feature dumps in the real UM and W-TALC layouts (SPEC §1).

  python -m data_prep.synthetic --out DIR --layout {um,wtalc}
      --preset {tiny,thumos,activitynet,fewvideo,partial} [--seed N] [--annotations GT] [--noise X]

Holds the generator of action-unit structured features, the presets, and writers of both public
layouts with their real annotation files, so that `python -m data_prep.build` reads synthetic
data through exactly the code real dumps take. `generate(...)` is the same as a Python call.

The world being simulated (every number is a FeatureParams field):
* C classes; class c is a sequence of 2-4 action units: one unit of its own and 1-3 units
  from a shared pool of about C/2, so only part of an action tells classes apart. An instance
  [s, e] is cut into consecutive phases, one per unit (boundaries jittered).
* Every unit, background scene and the component all snippets share is a sparse non-negative
  prototype with an rgb half and a flow half; a video mixes two background scenes that drift,
  sees each of its units with a per-video variation, and has its own overall gain.
* Class context: next to some instances, a few seconds that look weakly like the class (its
  units at reduced strength) but are background, and not annotated.
* snippet = relu(gain * (1 + action_gain * a) * mix + noise) * scale, where a is the fraction
  of the snippet inside an instance: action snippets have a somewhat larger norm, as in real
  I3D features; the noise is temporally smoothed; features are float32 and non-negative.
Instances: THUMOS-like presets have many short instances (median ~3 s) covering ~30 % of a
video, 1-2 classes per video; the ActivityNet-like preset has 1-3 long instances of one class.

The battery of data regimes (benchmarks/robustness.py, docs/method.md §7) adds two presets:
`fewvideo` keeps 60 / 40 videos (every class in each split) and clips each to the 300-snippet
window holding the most annotated time — meant for `--annotations` on the real THUMOS14 gt.json
(~36-38 % action snippets, real instance lengths); `partial` makes action units differ only
partly from the scene (the scene stays at 90 % during an action, units at half strength, strong
per-video gains, no norm cue). Their subsampling and clipping apply to --annotations plans too.

--annotations GT takes videos, durations, classes and instances from real annotation files
(a UM/ACM-Net gt.json, or a W-TALC <Name>-Annotations directory): features are generated for
exactly those videos (T = round(duration * 25 / 16)), actions where the annotations put them,
and the layout's annotation files reproduce the source exactly (copied when the layouts match).

Determinism: same arguments => same bytes. Prototypes depend on (seed, class count), a video's
features on (seed, video id, its T and instances): the um and wtalc outputs of one call
describe identical videos, and a video annotated identically in two sources gets identical
features.

Deliberately doesn't: build TFDS datasets (data_prep/build.py) or model anything beyond what
the localization task needs (no camera motion, no shot cuts).
"""
import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from typing import Callable, Iterator, Sequence

import numpy as np

from aumn_jax import files
from aumn_jax.data import DataError
from data_prep import layouts

SNIPPET_S = layouts.SNIPPET_STRIDE / layouts.FEATURE_FPS  # 0.64 s
F = layouts.FEATURE_DIM
HALF = layouts.HALF_DIM

# First entropy word of each SeedSequence: keeps the annotation, prototype and per-video
# feature streams disjoint for one seed.
_PLAN_STREAM, _PROTOTYPE_STREAM, _FEATURE_STREAM = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class FeatureParams:
  """How features are drawn (shared by every preset unless a preset overrides it)."""
  units_per_class: tuple[int, int] = (2, 4)   # inclusive range; one of them is class-specific
  shared_units_ratio: float = 0.5   # shared pool size / number of classes
  density: float = 0.25             # fraction of non-zero dims of a prototype
  num_backgrounds: int = 8          # background scene prototypes; a video mixes two
  common_strength: float = 1.0      # the component every snippet shares (ReLU features do)
  background_strength: float = 1.0
  background_in_action: float = 0.6  # share of the scene still seen during an action
  flow_background: float = 0.5      # background moves less than actions: weaker flow half
  unit_strength: float = 1.0
  unit_jitter: float = 0.5          # per-video variation of a unit's appearance (relative norm)
  phase_jitter: float = 0.15        # unit phase boundaries move by this fraction of a phase
  context_prob: float = 0.5         # chance an instance has class context next to it
  context_strength: float = 0.5     # context looks like the class at this strength
  context_seconds: tuple[float, float] = (1.0, 4.0)
  noise: float = 1.0                # norm of the per-snippet noise vector
  smooth_noise: bool = True         # [1, 2, 1] filter over time: neighbouring snippets correlate
  action_gain: float = 0.1          # action snippets' extra gain (norm separates action moderately)
  video_gain_sigma: float = 0.15    # log-normal per-video gain
  drift_sigma: float = 0.15         # log-normal, slowly drifting per-snippet gain (lighting, zoom)
  scale: float = 20.0               # overall scale: per-dim values ~0.1-1 like real I3D


@dataclasses.dataclass(frozen=True)
class Preset:
  """Sizes and instance statistics of a generated dataset."""
  style: str                        # 'thumos' | 'activitynet': file conventions and ids
  num_classes: int
  num_train: int
  num_test: int
  median_snippets: float            # video length: log-normal, clipped
  sigma_snippets: float
  min_snippets: int
  max_snippets: int
  two_class_prob: float             # videos with two classes (THUMOS: ~15 %)
  instance_median_s: float          # instance length: log-normal, clipped
  instance_sigma: float
  coverage: tuple[float, float]     # fraction of a video inside instances, uniform
  max_instances: int
  features: FeatureParams = FeatureParams()
  # Applied to generated plans and to --annotations plans alike (see transform_plan):
  subsample: tuple[int, int] | None = None  # keep (train, test) videos, every class in each
  clip_snippets: int | None = None  # clip each video to the window of this many snippets
                                    # that holds the most annotated time


# Action units that differ only partly from the background (the 'partial' regime).
PARTIAL_FEATURES = FeatureParams(background_in_action=0.9, unit_strength=0.5, action_gain=0.0,
                                 video_gain_sigma=0.5)

PRESETS = {
    # A handful of classes, seconds to generate and build; the test suite's dataset.
    'tiny': Preset(style='thumos', num_classes=4, num_train=24, num_test=16,
                   median_snippets=110, sigma_snippets=0.35, min_snippets=50,
                   max_snippets=200, two_class_prob=0.15, instance_median_s=4.0,
                   instance_sigma=0.6, coverage=(0.15, 0.45), max_instances=40),
    # THUMOS14 sizes: 20 classes, 200 / 212 videos, median ~240 snippets, ~10 % over 750.
    'thumos': Preset(style='thumos', num_classes=20, num_train=200, num_test=212,
                     median_snippets=240, sigma_snippets=0.85, min_snippets=14,
                     max_snippets=2600, two_class_prob=0.15, instance_median_s=2.9,
                     instance_sigma=0.75, coverage=(0.1, 0.5), max_instances=200),
    # ActivityNet-like but affordable: 100 classes, short videos, 1-3 long instances.
    'activitynet': Preset(style='activitynet', num_classes=100, num_train=800, num_test=400,
                          median_snippets=96, sigma_snippets=0.4, min_snippets=24,
                          max_snippets=256, two_class_prob=0.0, instance_median_s=25.0,
                          instance_sigma=0.6, coverage=(0.3, 0.9), max_instances=3),
    # The battery of data regimes (benchmarks/robustness.py; docs/method.md §7). Each is a
    # dataset a real dump could resemble; none was tuned to the model.
    # Few videos: ~60 training videos (1-6 per class), clips of <= 300 snippets around the
    # annotated time (~35-40 % action snippets). Meant for --annotations on the real THUMOS14
    # gt.json (real instance lengths and counts); without it, THUMOS-like generated videos.
    'fewvideo': Preset(style='thumos', num_classes=20, num_train=60, num_test=40,
                       median_snippets=240, sigma_snippets=0.85, min_snippets=14,
                       max_snippets=2600, two_class_prob=0.15, instance_median_s=4.0,
                       instance_sigma=0.8, coverage=(0.25, 0.5), max_instances=200,
                       subsample=(60, 40), clip_snippets=300),
    # Action units differ only partly from the background: most of an action snippet is still
    # the scene, units are weak, per-video gains vary a lot and the feature norm says nothing
    # about actionness (no action gain): what a dump of cluttered, unevenly lit video is like.
    'partial': Preset(style='thumos', num_classes=20, num_train=200, num_test=212,
                      median_snippets=240, sigma_snippets=0.85, min_snippets=14,
                      max_snippets=2600, two_class_prob=0.15, instance_median_s=2.9,
                      instance_sigma=0.75, coverage=(0.1, 0.5), max_instances=200,
                      features=PARTIAL_FEATURES),
}
PRESETS_NAMES = tuple(PRESETS)

# Subset names each layout's real files use, per style (gt.json of UM THUMOS says train/test).
_SUBSETS = {
    ('um', 'thumos'): {'train': 'train', 'test': 'test'},
    ('wtalc', 'thumos'): {'train': 'validation', 'test': 'test'},
    ('um', 'activitynet'): {'train': 'training', 'test': 'validation'},
    ('wtalc', 'activitynet'): {'train': 'training', 'test': 'validation'},
}


@dataclasses.dataclass
class VideoSpec:
  """One video to generate: its annotations and length."""
  video_id: str
  split: str | None                 # 'train' | 'test' | None (a source row in no split)
  duration: float                   # seconds
  segments: np.ndarray              # float64 [N, 2] seconds
  labels: list[str]

  @property
  def num_snippets(self) -> int:
    return max(1, int(round(self.duration * layouts.FEATURE_FPS / layouts.SNIPPET_STRIDE)))


@dataclasses.dataclass
class Plan:
  """Everything but the features: what both layout writers need."""
  class_names: list[str]
  videos: list[VideoSpec]           # dump order
  style: str
  subsets: dict[str, dict[str, str]]  # layout -> {'train': name, 'test': name} to write
  wtalc_name: str = 'Synthetic'
  um_copy: dict[str, str] = dataclasses.field(default_factory=dict)  # out name -> source file
  wtalc_copy: str | None = None     # source <Name>-Annotations dir, copied verbatim
  write_durations: bool = True      # UM: durations.json (else durations are in gt.json / T)


# ---------------------------------------------------------------------------- planning


def plan_preset(preset: Preset, seed: int) -> Plan:
  """Videos, durations and instances of a generated preset."""
  rng = np.random.default_rng([_PLAN_STREAM, seed])
  c = preset.num_classes
  thumos = preset.style == 'thumos'
  class_names = [f'class_{i:02d}' if thumos else f'activity {i:03d}' for i in range(c)]
  videos = []
  for split, n in (('train', preset.num_train), ('test', preset.num_test)):
    # Every class leads about as many videos of each split (the ActivityNet evaluator fails
    # on a predicted class absent from the test ground truth).
    leads = rng.permutation(np.resize(np.arange(c), n))
    for k in range(n):
      if thumos:
        vid = f'video_{"validation" if split == "train" else "test"}_{k + 1:07d}'
      else:
        vid = f'v_synth_{split}_{k + 1:05d}'
      t = np.exp(rng.normal(np.log(preset.median_snippets), preset.sigma_snippets))
      t = int(np.clip(round(t), preset.min_snippets, preset.max_snippets))
      # T = round(duration / 0.64) exactly, as for real videos.
      duration = round((t - rng.uniform(0.0, 0.45)) * SNIPPET_S, 3)
      classes = [int(leads[k])]
      if rng.random() < preset.two_class_prob:
        classes.append(int(rng.choice([i for i in range(c) if i != classes[0]])))
      segments, labels = _place_instances(rng, preset, duration, classes, thumos)
      videos.append(VideoSpec(vid, split, duration, segments,
                              [class_names[i] for i in labels]))
  return Plan(class_names, videos, preset.style,
              {layout: _SUBSETS[layout, preset.style] for layout in layouts.LAYOUTS},
              write_durations=thumos)  # ActivityNet-style gt.json carries durations itself


def _place_instances(rng, preset: Preset, duration: float, classes: list[int], thumos: bool):
  """Non-overlapping instances covering ~coverage of the video, in time order."""
  target = rng.uniform(*preset.coverage) * duration
  lengths = []
  while sum(lengths) < target and len(lengths) < preset.max_instances:
    length = np.exp(rng.normal(np.log(preset.instance_median_s), preset.instance_sigma))
    lengths.append(float(np.clip(length, 0.3, 0.6 * duration)))
  lengths = np.asarray(lengths)
  lengths *= min(1.0, 0.9 * duration / lengths.sum())  # always leave some background
  gaps = rng.dirichlet(np.ones(len(lengths) + 1)) * (duration - lengths.sum())
  starts = np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
  decimals = 1 if thumos else 2  # THUMOS annotations are at 0.1 s
  step = 10.0 ** -decimals
  last = np.floor(duration / step) * step  # rounding must not end an instance past the video
  segments, previous_end = [], 0.0
  for s, l in zip(starts, lengths):  # rounded, they may touch but never overlap
    s = round(max(float(s), previous_end), decimals)
    e = round(min(max(s + float(l), s + step), last), decimals)
    if e <= s:  # no room left at the end of the video
      break
    segments.append([s, e])
    previous_end = e
  # Two-class videos: instances come in runs of one class (a sticky chain), each class >= once.
  labels, current = [], 0
  for k in range(len(segments)):
    if k and len(classes) > 1 and rng.random() < 0.3:
      current = 1 - current
    labels.append(classes[current])
  if len(classes) > 1 and len(labels) > 1 and len(set(labels)) < 2:
    labels[-1] = classes[1 - current]
  return np.asarray(segments, np.float64).reshape(-1, 2), labels


def plan_from_annotations(path: str) -> Plan:
  """Videos, durations, classes and instances of real annotation files.

  `path`: a gt.json (UM / ACM-Net / ActivityNet style; split files, classlist.txt and
  durations.json beside it are used when present) or a W-TALC <Name>-Annotations directory
  (or one of its .npy files).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(path):
    raise DataError(path, 'annotation file not found')
  if os.path.isfile(path) and path.endswith('.npy'):
    path = os.path.dirname(path)
  if os.path.isdir(path):
    return _plan_from_wtalc(path)
  return _plan_from_gt_json(path)


def _plan_from_gt_json(path: str) -> Plan:
  root = os.path.dirname(path)
  raw = layouts.UmDataset(root, gt_path=path)
  layouts.check_annotations(raw)
  beside = {name: os.path.join(root, name)
            for name in (layouts.UM_CLASSLIST, layouts.UM_DURATIONS,
                         *layouts.UM_SPLIT_FILES.values())}
  um_copy = {'gt.json': path}
  um_copy.update({n: p for n, p in beside.items() if os.path.exists(p)})
  videos, derived = [], False
  for v in raw.videos():
    duration = v.duration
    if duration is None:  # no durations.json, no duration key: just past the last instance
      if not len(v.segments):
        raise DataError(path, f'video {v.video_id!r}: no duration and no annotations to '
                        'derive one from')
      duration, derived = round(float(v.segments[:, 1].max()) + 2.0, 3), True
    videos.append(VideoSpec(v.video_id, v.split, duration, v.segments, list(v.labels)))
  style = 'activitynet' if raw.subsets['train'] == 'training' else 'thumos'
  subsets = {layout: dict(raw.subsets) for layout in layouts.LAYOUTS}
  # durations.json only where the durations used were derived here (a copied one is kept).
  return Plan(raw.class_names, videos, style, subsets, um_copy=um_copy, write_durations=derived)


def _plan_from_wtalc(path: str) -> Plan:
  if os.path.basename(path).endswith(layouts.WTALC_ANNOTATIONS_SUFFIX):
    root, name = os.path.dirname(path), os.path.basename(path)[:-len(
        layouts.WTALC_ANNOTATIONS_SUFFIX)]
  else:  # the directory that holds <Name>-Annotations
    root, name = path, None
  raw = layouts.WtalcDataset(root, name=name)
  layouts.check_annotations(raw)
  videos = []
  for v in raw.rows:
    if v.duration is None:
      raise DataError(raw.annotation_dir, 'no duration.npy: video lengths are unknown')
    videos.append(VideoSpec(v.video_id, v.split, v.duration, v.segments, list(v.labels)))
  style = 'activitynet' if raw.subsets['train'] == 'training' else 'thumos'
  subsets = {layout: dict(raw.subsets) for layout in layouts.LAYOUTS}
  return Plan(raw.class_names, videos, style, subsets, wtalc_name=raw.name,
              wtalc_copy=raw.annotation_dir)


def transform_plan(plan: Plan, preset: Preset, seed: int) -> Plan:
  """The preset's subsampling and clipping of a plan (generated or from annotations).

  subsample (n_train, n_test): per split, one video of each class first (classes in a seeded
  random order; each pick a random video holding that class), then random videos up to n;
  only videos with at least one instance are eligible and the dump order is kept.
  clip_snippets T: a longer video becomes the T-snippet window holding the most annotated
  time (the earliest such window); instances are cut to it (a piece shorter than 0.2 s is
  dropped) and shifted to the window's start. The annotation files are then written anew
  (never copied): they describe the transformed videos.

  Raises:
    DataError: a clip that loses a video's every instance, or a class's last instance in a
      split (e.g. the real THUMOS14 gt.json with seed 29): one line naming the seed.
  """
  if preset.subsample is None and preset.clip_snippets is None:
    return plan
  rng = np.random.default_rng([_PLAN_STREAM, seed, 1])
  videos = [v for v in plan.videos if v.split is not None]
  if preset.subsample is not None:
    keep = set()
    for split, n in zip(layouts.SPLITS, preset.subsample):
      pool = [i for i, v in enumerate(videos) if v.split == split and len(v.labels)]
      chosen = []
      for c in rng.permutation(len(plan.class_names)):
        if len(chosen) >= n:
          break
        name = plan.class_names[c]
        if any(name in videos[i].labels for i in chosen):
          continue
        holders = [i for i in pool if name in videos[i].labels and i not in chosen]
        if holders:
          chosen.append(int(rng.choice(holders)))
      rest = [i for i in pool if i not in chosen]
      extra = rng.permutation(len(rest))[:max(0, n - len(chosen))]
      keep.update(chosen + [rest[i] for i in extra])
    videos = [v for i, v in enumerate(videos) if i in keep]
  if preset.clip_snippets is not None:
    videos = [_clip_video(v, preset.clip_snippets) for v in videos]
    empty = [v.video_id for v in videos if not len(v.labels)]
    if empty:
      raise DataError(f'--seed={seed}', f'clipping {empty[0]} to {preset.clip_snippets} '
                      'snippets left none of its instances; use another seed')
  if preset.subsample is not None:
    for split in layouts.SPLITS:
      lost = sorted(set(plan.class_names) - {l for v in videos if v.split == split
                                              for l in v.labels})
      if lost:
        raise DataError(f'--seed={seed}', f'after clipping, no {split} video holds class '
                        f'{lost[0]!r}; use another seed')
  return dataclasses.replace(plan, videos=videos, um_copy={}, wtalc_copy=None,
                             write_durations=plan.style == 'thumos')


def _clip_video(video: VideoSpec, t_max: int) -> VideoSpec:
  t = video.num_snippets
  if t <= t_max:
    return video
  annotated = np.zeros(t, np.float64)
  for s, e in video.segments:
    i0, frac = _coverage(float(s), float(e), t)
    annotated[i0:i0 + len(frac)] = np.maximum(annotated[i0:i0 + len(frac)], frac)
  window = np.convolve(annotated, np.ones(t_max), mode='valid')  # [t - t_max + 1]
  start = int(np.argmax(window)) * SNIPPET_S
  duration = round((t_max - 0.25) * SNIPPET_S, 3)  # round(duration / 0.64) == t_max
  segments, labels = [], []
  for (s, e), label in zip(video.segments.tolist(), video.labels):
    s, e = round(max(s - start, 0.0), 1), round(min(e - start, duration - 0.05), 1)
    if e - s >= 0.2 - 1e-9:
      segments.append([s, e])
      labels.append(label)
  return VideoSpec(video.video_id, video.split, duration,
                   np.asarray(segments, np.float64).reshape(-1, 2), labels)


# ---------------------------------------------------------------------------- features


@dataclasses.dataclass
class Prototypes:
  common: np.ndarray                # [F]
  backgrounds: np.ndarray           # [B, F]
  units: np.ndarray                 # [P, F]
  class_units: list[list[int]]      # unit sequence of each class
  context: np.ndarray               # [C, F] what class context looks like


def _directions(rng, n: int, density: float) -> np.ndarray:
  """n sparse non-negative unit vectors, each half (rgb, flow) of norm 1/sqrt(2)."""
  v = np.abs(rng.standard_normal((n, 2, HALF), dtype=np.float32))
  v *= rng.random((n, 2, HALF), dtype=np.float32) < density
  v /= np.maximum(np.linalg.norm(v, axis=2, keepdims=True), 1e-6) * np.sqrt(2.0)
  return v.reshape(n, F)


def make_prototypes(num_classes: int, params: FeatureParams, seed: int) -> Prototypes:
  rng = np.random.default_rng([_PROTOTYPE_STREAM, seed, num_classes])
  num_shared = max(2, int(round(params.shared_units_ratio * num_classes)))
  units = _directions(rng, num_classes + num_shared, params.density)
  class_units = []
  for c in range(num_classes):
    k = int(rng.integers(params.units_per_class[0], params.units_per_class[1] + 1))
    shared = rng.choice(num_shared, size=min(k - 1, num_shared), replace=False) + num_classes
    sequence = [c] + [int(u) for u in shared]
    class_units.append([sequence[i] for i in rng.permutation(len(sequence))])
  backgrounds = _directions(rng, params.num_backgrounds, params.density)
  backgrounds[:, HALF:] *= params.flow_background
  common = _directions(rng, 1, 2 * params.density)[0]
  context = np.stack([units[u].mean(axis=0) for u in class_units])
  context /= np.linalg.norm(context, axis=1, keepdims=True)
  return Prototypes(common, backgrounds, units, class_units, context)


def _coverage(start: float, end: float, t: int) -> tuple[int, np.ndarray]:
  """First snippet index and the fraction of each snippet from it inside [start, end)."""
  i0 = max(0, int(np.floor(start / SNIPPET_S)))
  i1 = min(t, int(np.ceil(end / SNIPPET_S)))
  if i1 <= i0:
    return i0, np.zeros(0, np.float32)
  edges = np.arange(i0, i1 + 1) * SNIPPET_S
  inside = np.minimum(edges[1:], end) - np.maximum(edges[:-1], start)
  return i0, np.clip(inside / SNIPPET_S, 0.0, 1.0).astype(np.float32)


def render(video: VideoSpec, protos: Prototypes, class_index: dict[str, int],
           params: FeatureParams, seed: int) -> np.ndarray:
  """float32 [T, 2048] non-negative features of one video."""
  rng = np.random.default_rng(
      [_FEATURE_STREAM, seed, zlib.crc32(video.video_id.encode('utf-8'))])
  t = video.num_snippets
  # Sorted, so that the same instances listed in another order give the same features.
  instances = sorted((float(s), float(e), class_index[l])
                     for (s, e), l in zip(video.segments, video.labels))
  used = sorted({u for _, _, c in instances for u in protos.class_units[c]})
  column = {u: j for j, u in enumerate(used)}
  unit_w = np.zeros((t, len(used)), np.float32)
  action = np.zeros(t, np.float32)
  context_classes = sorted({c for _, _, c in instances})
  context_w = np.zeros((t, len(context_classes)), np.float32)
  for s, e, c in instances:
    i0, frac = _coverage(s, e, t)
    action[i0:i0 + len(frac)] += frac
    units = protos.class_units[c]
    k = len(units)
    cuts = (np.arange(1, k) + rng.uniform(-params.phase_jitter, params.phase_jitter, k - 1)) / k
    bounds = [s, *(s + (e - s) * cuts), e]
    for j, u in enumerate(units):
      i0, frac = _coverage(bounds[j], bounds[j + 1], t)
      unit_w[i0:i0 + len(frac), column[u]] += frac
    if rng.random() < params.context_prob:
      length = rng.uniform(*params.context_seconds)
      gap = rng.uniform(0.0, 1.0)
      if rng.random() < 0.5:
        i0, frac = _coverage(s - gap - length, s - gap, t)
      else:
        i0, frac = _coverage(e + gap, e + gap + length, t)
      context_w[i0:i0 + len(frac), context_classes.index(c)] += frac
  action = np.minimum(action, 1.0)
  unit_w /= np.maximum(unit_w.sum(axis=1, keepdims=True), 1.0)  # overlapping instances
  context_w = np.minimum(context_w, 1.0) * (1.0 - action)[:, None]  # context is background

  # Two background scenes drifting over the video.
  pair = rng.choice(len(protos.backgrounds), size=2, replace=False)
  period = rng.uniform(0.5, 2.0) * t
  mixing = 0.5 + 0.5 * np.sin(2 * np.pi * np.arange(t) / period + rng.uniform(0, 2 * np.pi))
  scene = params.background_strength * (1.0 - (1.0 - params.background_in_action) * action)
  # Sums of outer products, not matmuls: with a few columns OpenBLAS is ~20x slower here, and
  # elementwise arithmetic gives the same bytes on every machine.
  mix = np.outer((scene * mixing).astype(np.float32), protos.backgrounds[pair[0]])
  _add_outer(mix, scene * (1.0 - mixing), protos.backgrounds[pair[1]])
  mix += np.float32(params.common_strength) * protos.common
  if used:
    jitter = _directions(rng, len(used), params.density)
    appearance = protos.units[used] + np.float32(params.unit_jitter) * jitter
    appearance /= np.linalg.norm(appearance, axis=1, keepdims=True)
    for j in range(len(used)):
      _add_outer(mix, params.unit_strength * unit_w[:, j], appearance[j])
  for j, c in enumerate(context_classes):
    if context_w[:, j].any():
      _add_outer(mix, params.context_strength * context_w[:, j], protos.context[c])

  drift = np.convolve(rng.standard_normal(t + 7), np.ones(8), mode='valid') / np.sqrt(8.0)
  gain = (np.exp(rng.normal(0.0, params.video_gain_sigma) + params.drift_sigma * drift) *
          (1.0 + params.action_gain * action))
  mix *= gain.astype(np.float32)[:, None]
  # Uniform noise (3x cheaper to draw than normal), unit variance; the [1, 2, 1] filter over
  # time makes neighbouring snippets correlate, as overlapping receptive fields do.
  eps = rng.random((t + 2, F), dtype=np.float32)
  eps -= np.float32(0.5)
  if params.smooth_noise:
    eps = eps[:-2] + 2.0 * eps[1:-1] + eps[2:]
    eps_scale = np.sqrt(12.0 / 6.0)
  else:
    eps, eps_scale = eps[1:-1], np.sqrt(12.0)
  eps *= np.float32(eps_scale * params.noise / np.sqrt(F))
  mix += eps
  np.maximum(mix, 0.0, out=mix)
  mix *= np.float32(params.scale)
  return mix


def _add_outer(out: np.ndarray, w: np.ndarray, v: np.ndarray) -> None:
  out += np.asarray(w, np.float32)[:, None] * v[None, :]


# ---------------------------------------------------------------------------- writers


def _write_um(out: str, plan: Plan, features: Iterator[tuple[VideoSpec, np.ndarray]]) -> None:
  """UM / BaS-Net layout: per-video rgb and flow .npy files, gt.json, split files."""
  subsets = plan.subsets['um']
  in_split = [v for v in plan.videos if v.split is not None]
  for split in layouts.SPLITS:
    for stream in ('rgb', 'flow'):
      os.makedirs(os.path.join(out, 'features', layouts.UM_FEATURE_DIRS[split], stream))
  for video, x in features:
    if video.split is None:
      continue
    base = os.path.join(out, 'features', layouts.UM_FEATURE_DIRS[video.split])
    np.save(os.path.join(base, 'rgb', video.video_id + '.npy'), x[:, :HALF])
    np.save(os.path.join(base, 'flow', video.video_id + '.npy'), x[:, HALF:])

  for name, source in plan.um_copy.items():  # real files stay byte-identical
    shutil.copyfile(source, os.path.join(out, name))
  if 'gt.json' not in plan.um_copy:
    database = {}
    for v in in_split:
      if plan.style == 'thumos':  # UM's THUMOS gt.json: string seconds, no duration key
        anns = [{'segment': [str(s), str(e)], 'label': l}
                for (s, e), l in zip(v.segments.tolist(), v.labels)]
        database[v.video_id] = {'subset': subsets[v.split], 'annotations': anns}
      else:  # official ActivityNet style: float seconds and a duration
        anns = [{'segment': [s, e], 'label': l}
                for (s, e), l in zip(v.segments.tolist(), v.labels)]
        database[v.video_id] = {'subset': subsets[v.split], 'duration': v.duration,
                                'annotations': anns}
    _write_json(os.path.join(out, 'gt.json'), {'database': database})
  for split, name in layouts.UM_SPLIT_FILES.items():
    if name not in plan.um_copy:
      _write_text(os.path.join(out, name),
                  ''.join(v.video_id + '\n' for v in in_split if v.split == split))
  if layouts.UM_CLASSLIST not in plan.um_copy:
    _write_text(os.path.join(out, layouts.UM_CLASSLIST),
                ''.join(c + '\n' for c in plan.class_names))
  if layouts.UM_DURATIONS not in plan.um_copy and plan.write_durations:
    _write_json(os.path.join(out, layouts.UM_DURATIONS),
                {v.video_id: {'duration': v.duration, 'original_fps': 30.0} for v in in_split})


def _write_wtalc(out: str, plan: Plan,
                 features: Iterator[tuple[VideoSpec, np.ndarray]]) -> None:
  """W-TALC layout: one object array of [T, 2048] in videoname order + annotation arrays."""
  name = plan.wtalc_name
  ann_dir = os.path.join(out, name + layouts.WTALC_ANNOTATIONS_SUFFIX)
  videos = plan.videos if plan.wtalc_copy else [v for v in plan.videos if v.split is not None]
  dump = np.empty(len(videos), dtype=object)
  keep = {v.video_id for v in videos}
  i = 0
  for video, x in features:
    if video.video_id in keep:
      dump[i] = x
      i += 1
  np.save(os.path.join(out, name + layouts.WTALC_FEATURES_SUFFIX), dump, allow_pickle=True)
  del dump

  os.makedirs(ann_dir)
  if plan.wtalc_copy:  # real files stay byte-identical (copyfile: not their read-only modes)
    for f in sorted(os.listdir(plan.wtalc_copy)):
      if os.path.isfile(os.path.join(plan.wtalc_copy, f)):
        shutil.copyfile(os.path.join(plan.wtalc_copy, f), os.path.join(ann_dir, f))
    return
  subsets = plan.subsets['wtalc']
  thumos = plan.style == 'thumos'

  def objects(rows):
    arr = np.empty(len(rows), dtype=object)
    for k, row in enumerate(rows):
      arr[k] = row
    return arr

  arrays = {
      'videoname': np.array([v.video_id.encode('utf-8') for v in videos]),
      'subset': np.array([subsets[v.split].encode('utf-8') for v in videos]),
      'segments': objects([v.segments.tolist() for v in videos]),
      'labels': objects([list(v.labels) for v in videos]),
      'labels_all': objects([list(dict.fromkeys(v.labels)) for v in videos]),
      'classlist': np.array([c.encode('utf-8') for c in plan.class_names]),
      # W-TALC's THUMOS duration.npy is (N, 1), ActivityNet's (N,).
      'duration': np.array([v.duration for v in videos], np.float64).reshape(
          (-1, 1) if thumos else (-1,)),
  }
  if thumos:
    arrays['original_fps'] = np.full(len(videos), 30.0)
    arrays['extracted_fps'] = np.full(len(videos), 10, np.int64)
  for key, value in arrays.items():
    np.save(os.path.join(ann_dir, key + '.npy'), value, allow_pickle=True)


def _write_json(path: str, obj) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(obj, f)


def _write_text(path: str, text: str) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


# ---------------------------------------------------------------------------- API + CLI


def generate(out_dir: str, layout: str, preset: str, seed: int = 0,
             annotations: str | None = None, log: Callable[[str], None] | None = None,
             **feature_overrides) -> str:
  """Writes a synthetic dump in `layout` to `out_dir` (all or nothing).

  Args:
    out_dir: created; may exist if empty.
    layout: 'um' or 'wtalc'.
    preset: a PRESETS name (with `annotations`: the feature params, and the preset's
      subsampling / clipping if it has them).
    seed: everything is a function of it.
    annotations: real annotation files to take videos, classes and instances from (a gt.json
      or a W-TALC <Name>-Annotations dir) instead of generating them.
    log: called with a summary line (print for the CLI).
    **feature_overrides: FeatureParams fields, e.g. noise=0.5.

  Returns:
    out_dir, absolute.

  Raises:
    DataError: bad arguments or annotation files.
  """
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if layout not in layouts.LAYOUTS:
    raise DataError(layout, f'unknown layout; expected one of {", ".join(layouts.LAYOUTS)}')
  if preset not in PRESETS:
    raise DataError(preset, f'unknown preset; expected one of {", ".join(PRESETS)}')
  if not isinstance(seed, int) or seed < 0:  # (numpy's SeedSequence takes no negative entropy)
    raise DataError(f'--seed={seed}', 'must be an integer >= 0')
  params = PRESETS[preset].features
  try:
    params = dataclasses.replace(params, **feature_overrides)
  except TypeError as e:
    raise DataError('feature_overrides', str(e)) from None
  for name, value in feature_overrides.items():
    if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
      raise DataError(f'--{name}={value}', 'must be a finite number >= 0')
  if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    raise DataError(out_dir, 'already exists and is not an empty directory')

  start = time.time()
  plan = (plan_from_annotations(annotations) if annotations
          else plan_preset(PRESETS[preset], seed))
  plan = transform_plan(plan, PRESETS[preset], seed)
  protos = make_prototypes(len(plan.class_names), params, seed)
  class_index = {c: i for i, c in enumerate(plan.class_names)}

  def features():
    for video in plan.videos:
      if layout == 'um' and video.split is None:
        continue
      yield video, render(video, protos, class_index, params, seed)

  parent = os.path.dirname(out_dir)
  snippets = sum(v.num_snippets for v in plan.videos if layout == 'wtalc' or v.split is not None)
  shortfall = files.space_shortfall(parent, snippets * layouts.FEATURE_DIM * 4)  # float32
  if shortfall:
    raise DataError(out_dir, f'the {preset!r} dump {shortfall}')
  created = []
  d = parent
  while not os.path.isdir(d):
    created.append(d)
    d = os.path.dirname(d)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out_dir)}-writing-', dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename
  try:
    (_write_um if layout == 'um' else _write_wtalc)(tmp, plan, features())
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty, checked above
    os.rename(tmp, out_dir)
  except BaseException as e:
    why = files.write_failure(e, tmp) if isinstance(e, OSError) else None
    shutil.rmtree(tmp, ignore_errors=True)
    for d in created:  # innermost first
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
    if why:  # a disk that filled after the check, permissions
      raise DataError(out_dir, f'writing failed: {why}; nothing was left') from e
    raise
  if log:
    counts = {s: sum(v.split == s for v in plan.videos) for s in layouts.SPLITS}
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(out_dir) for f in files)
    log(f'wrote {layout} layout to {out_dir}: {len(plan.class_names)} classes, '
        f'train {counts["train"]} / test {counts["test"]} videos, {size / 2**20:.1f} MiB '
        f'({time.time() - start:.1f}s)')
  return out_dir


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m data_prep.synthetic',
      description='Writes synthetic I3D-like features in a real dump layout (SPEC §1).')
  parser.add_argument('--out', required=True, help='output directory (absent or empty)')
  parser.add_argument('--layout', required=True, choices=layouts.LAYOUTS)
  parser.add_argument('--preset', default='tiny', choices=PRESETS_NAMES)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--annotations', default=None,
                      help='real gt.json or W-TALC <Name>-Annotations dir to take videos from')
  parser.add_argument('--noise', type=float, default=None, help='override the noise level')
  args = parser.parse_args(argv)
  overrides = {} if args.noise is None else {'noise': args.noise}
  try:
    generate(args.out, args.layout, args.preset, seed=args.seed,
             annotations=args.annotations, log=print, **overrides)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except OSError as e:
    print(f'error: {e.filename or args.out}: {e.strerror or e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
