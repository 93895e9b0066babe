"""Readers of the two public WTAL feature-dump layouts, with the checks a build runs first.

Holds: layout detection, the UM/BaS-Net reader (features/{train,test}/{rgb,flow}/<vid>.npy +
gt.json + split files), the W-TALC reader (<Name>-I3D-JOINTFeatures.npy + <Name>-Annotations/),
the gt.json parser (also used by data_prep.synthetic --annotations), and `validate`, which reads
every feature of every video and reports the first problem as a DataError naming the file.
Formats: ../shared/data/README.md.

Deliberately doesn't: write anything (data_prep/builders.py writes the TFDS dataset), fix or
clip annotations (segments past the end of a video stay: clipping is localization's job), or
know dataset names beyond W-TALC's file prefixes.

Conventions shared by every layout:
* Splits are 'train' and 'test' whatever the source calls its subsets (split_subsets).
* A video's labels are the union of its segment labels (UM's definition; W-TALC's
  labels_all.npy disagrees with its own segments for 28 THUMOS videos and is not used).
* Features are I3D at 25 fps, 16 frames per snippet, 2048 wide (rgb 1024 || flow 1024).
"""
import abc
import dataclasses
import glob
import json
import os
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from aumn_jax import data as data_lib
from aumn_jax.data import DataError

FEATURE_FPS = 25.0
SNIPPET_STRIDE = 16
FEATURE_DIM = 2048
HALF_DIM = FEATURE_DIM // 2
LAYOUTS = ('um', 'wtalc')
SPLITS = ('train', 'test')

UM_GT = 'gt.json'
UM_SPLIT_FILES = {'train': 'split_train.txt', 'test': 'split_test.txt'}
UM_FEATURE_DIRS = {'train': 'train', 'test': 'test'}
UM_CLASSLIST = 'classlist.txt'
UM_DURATIONS = 'durations.json'
WTALC_FEATURES_SUFFIX = '-I3D-JOINTFeatures.npy'
WTALC_ANNOTATIONS_SUFFIX = '-Annotations'
WTALC_REQUIRED = ('videoname.npy', 'subset.npy', 'segments.npy', 'labels.npy')
# Dataset name -> the W-TALC <Name> prefixes it prefers when a directory holds several.
WTALC_NAMES = {
    'thumos14': ('Thumos14reduced',),
    'activitynet12': ('ActivityNet1.2',),
    'activitynet13': ('ActivityNet1.3',),
    'synthetic': ('Synthetic',),
}
DATASETS = data_lib.DATASETS
assert set(WTALC_NAMES) == set(DATASETS), 'a W-TALC name for every buildable dataset'


@dataclasses.dataclass
class Video:
  """One annotated video of a split, before its features are read."""
  video_id: str
  split: str | None           # 'train' | 'test' (None: a W-TALC row in neither subset)
  segments: np.ndarray        # float64 [N, 2] seconds, exactly as annotated
  labels: list[str]           # class name per segment
  duration: float | None      # seconds from the annotation files; None: T * stride / fps


def split_subsets(subsets: Iterable[str]) -> dict[str, str]:
  """Which source subset is the train split and which the test split.

  THUMOS14 trains on 'validation' (W-TALC) or 'train' (UM) and tests on 'test'; ActivityNet
  trains on 'training' and tests on 'validation'.
  """
  subsets = set(subsets)
  if 'training' in subsets:
    return {'train': 'training', 'test': 'validation'}
  return {'train': 'train' if 'train' in subsets else 'validation', 'test': 'test'}


def to_str(value) -> str:
  """bytes (W-TALC THUMOS / ActivityNet 1.2) or str (ActivityNet 1.3) -> str."""
  if isinstance(value, (bytes, np.bytes_)):
    return value.decode('utf-8')
  return str(value)


class RawDataset(abc.ABC):
  """Annotations of both splits of a raw dump, plus access to each video's features."""

  layout: str
  root: str

  def __init__(self, root: str, class_names: Sequence[str], splits: dict[str, list[Video]],
               subsets: dict[str, str], annotation_file: str):
    self.root = root
    self.class_names = list(class_names)
    self.splits = splits
    self.subsets = subsets                # {'train': source subset name, 'test': ...}
    self.annotation_file = annotation_file  # where labels/segments come from (for errors)
    self.fps = FEATURE_FPS
    self.snippet_stride = SNIPPET_STRIDE

  @abc.abstractmethod
  def features(self, video: Video) -> np.ndarray:
    """float32 [T, 2048] of `video`, checked (DataError naming the file otherwise)."""

  @abc.abstractmethod
  def feature_file(self, video: Video) -> str:
    """The file that holds `video`'s features (named in errors)."""

  def videos(self) -> Iterator[Video]:
    for split in SPLITS:
      yield from self.splits[split]


# ---------------------------------------------------------------------------- detection


def detect_layout(root: str) -> str:
  """'um' or 'wtalc', by which files exist under `root`."""
  if not os.path.isdir(root):
    raise DataError(root, 'manual_dir does not exist or is not a directory')
  has_um = os.path.exists(os.path.join(root, UM_GT))
  has_wtalc = bool(glob.glob(os.path.join(glob.escape(root), '*' + WTALC_FEATURES_SUFFIX)) or
                   glob.glob(os.path.join(glob.escape(root), '*' + WTALC_ANNOTATIONS_SUFFIX)))
  if has_um and has_wtalc:
    raise DataError(root, 'holds both a UM gt.json and W-TALC *-Annotations; pass --layout')
  if not (has_um or has_wtalc):
    raise DataError(root, f'no UM layout ({UM_GT} + features/) or W-TALC layout '
                    f'(<Name>{WTALC_FEATURES_SUFFIX} + <Name>{WTALC_ANNOTATIONS_SUFFIX}/) found')
  return 'um' if has_um else 'wtalc'


def read(root: str, layout: str = 'auto', wtalc_names: Sequence[str] = ()) -> RawDataset:
  """Reads the annotations of the raw dump at `root` (features are read on demand).

  Args:
    root: the manual_dir.
    layout: 'um', 'wtalc' or 'auto'.
    wtalc_names: preferred <Name> prefixes when a W-TALC dir holds several datasets.
  """
  root = os.path.abspath(os.path.expanduser(root))
  if layout == 'auto':
    layout = detect_layout(root)
  elif not os.path.isdir(root):
    raise DataError(root, 'manual_dir does not exist or is not a directory')
  if layout == 'um':
    return UmDataset(root)
  if layout == 'wtalc':
    return WtalcDataset(root, wtalc_names)
  raise DataError(root, f'unknown layout {layout!r}; expected auto, um or wtalc')


# ---------------------------------------------------------------------------- gt.json


def read_gt_json(path: str) -> dict[str, dict]:
  """Parses an ActivityNet-style gt.json (UM's string segments, ACM-Net's / official floats).

  Returns:
    {video_id: {'subset': str, 'duration': float | None, 'segments': float64 [N, 2],
                'labels': [str]}} in file order.
  """
  try:
    with open(path, 'rb') as f:
      gt = json.loads(f.read().decode('utf-8'))
  except FileNotFoundError:
    raise DataError(path, 'missing annotation file') from None
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DataError(path, f'malformed JSON: {e}') from None
  if not isinstance(gt, dict) or not isinstance(gt.get('database'), dict):
    raise DataError(path, 'malformed gt.json: no "database" object at the top level')
  videos = {}
  for vid, entry in gt['database'].items():
    where = f'malformed gt.json: video {vid!r}'
    if not isinstance(entry, dict) or not isinstance(entry.get('annotations', []), list):
      raise DataError(path, f'{where}: expected an object with an "annotations" list')
    duration = entry.get('duration')
    if duration is not None:
      duration = _number(duration, path, f'{where}: duration')
    segments, labels = [], []
    for k, ann in enumerate(entry.get('annotations', [])):
      seg = ann.get('segment') if isinstance(ann, dict) else None
      label = ann.get('label') if isinstance(ann, dict) else None
      if not isinstance(seg, (list, tuple)) or len(seg) != 2 or not isinstance(label, str):
        raise DataError(path, f'{where}: annotation {k} is not '
                        '{"segment": [start, end], "label": name}')
      segments.append([_number(x, path, f'{where}: annotation {k} segment') for x in seg])
      labels.append(label)
    subset = entry.get('subset')
    if not isinstance(subset, str):
      raise DataError(path, f'{where}: no "subset" string')
    videos[str(vid)] = {'subset': subset, 'duration': duration,
                        'segments': np.asarray(segments, np.float64).reshape(-1, 2),
                        'labels': labels}
  return videos


def _number(value, path: str, what: str) -> float:
  # UM's gt.json writes seconds as strings ("18.6"); bool is an int to Python, not a time.
  if isinstance(value, bool):
    raise DataError(path, f'{what}: {value!r} is not a number')
  try:
    return float(value)
  except (TypeError, ValueError):
    raise DataError(path, f'{what}: {value!r} is not a number') from None


def read_durations_json(path: str) -> dict[str, float]:
  """durations.json beside a UM gt.json: {vid: {"duration": s, ...}} or {vid: s}."""
  try:
    with open(path, 'rb') as f:
      data = json.loads(f.read().decode('utf-8'))
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DataError(path, f'malformed JSON: {e}') from None
  if not isinstance(data, dict):
    raise DataError(path, 'malformed durations.json: expected {video_id: {"duration": s}}')
  out = {}
  for vid, v in data.items():
    out[str(vid)] = _number(v.get('duration') if isinstance(v, dict) else v, path,
                            f'malformed durations.json: video {vid!r} duration')
  return out


def read_lines(path: str) -> list[str]:
  try:
    with open(path, 'rb') as f:
      text = f.read().decode('utf-8')
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(path, f'unreadable: {e}') from None
  return [line.strip() for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------- UM layout


class UmDataset(RawDataset):
  """UM / BaS-Net layout: features/{train,test}/{rgb,flow}/<vid>.npy ([T, 1024] each)."""

  layout = 'um'

  def __init__(self, root: str, gt_path: str | None = None):
    """`gt_path`: another gt.json than root/gt.json (split files etc. are still in root)."""
    gt_path = gt_path or os.path.join(root, UM_GT)
    gt = read_gt_json(gt_path)
    durations = {}
    if os.path.exists(os.path.join(root, UM_DURATIONS)):
      durations = read_durations_json(os.path.join(root, UM_DURATIONS))

    split_paths = {s: os.path.join(root, f) for s, f in UM_SPLIT_FILES.items()}
    present = [os.path.exists(p) for p in split_paths.values()]
    if any(present) and not all(present):
      missing = [p for p, ok in zip(split_paths.values(), present) if not ok][0]
      raise DataError(missing, 'missing split file (the other split has one)')
    subsets = split_subsets(v['subset'] for v in gt.values())
    if all(present):  # UM: the split files define the videos (210 test videos, not 212)
      members = {s: (read_lines(p), p) for s, p in split_paths.items()}
    else:
      members = {s: ([v for v, e in gt.items() if e['subset'] == subsets[s]], gt_path)
                 for s in SPLITS}

    splits = {}
    for split in SPLITS:
      ids, listed_in = members[split]
      if len(set(ids)) != len(ids):
        dup = next(v for v in ids if ids.count(v) > 1)
        raise DataError(listed_in, f'video {dup!r} is listed twice')
      videos = []
      for vid in ids:
        if vid not in gt:
          raise DataError(gt_path, f'video {vid!r} of {os.path.basename(listed_in)} has no entry')
        entry = gt[vid]
        videos.append(Video(vid, split, entry['segments'], entry['labels'],
                            durations.get(vid, entry['duration'])))
      splits[split] = videos

    class_path = os.path.join(root, UM_CLASSLIST)
    if os.path.exists(class_path):
      class_names = read_lines(class_path)
    else:  # UM hard-codes the class dict; sorted labels reproduce THUMOS14's order
      class_path = gt_path
      class_names = sorted({l for e in gt.values() for l in e['labels']})
    super().__init__(root, class_names, splits, subsets, gt_path)
    self.class_file = class_path

  def _paths(self, video: Video) -> tuple[str, str]:
    base = os.path.join(self.root, 'features', UM_FEATURE_DIRS[video.split])
    return (os.path.join(base, 'rgb', video.video_id + '.npy'),
            os.path.join(base, 'flow', video.video_id + '.npy'))

  def feature_file(self, video: Video) -> str:
    return self._paths(video)[0]

  def features(self, video: Video) -> np.ndarray:
    rgb_path, flow_path = self._paths(video)
    if not os.path.exists(rgb_path) and not os.path.exists(flow_path):
      raise DataError(rgb_path, f'video {video.video_id!r} of the {video.split} split has no '
                      'features (neither rgb nor flow file exists)')
    rgb = check_features(_load_npy(rgb_path), rgb_path, HALF_DIM)
    flow = check_features(_load_npy(flow_path), flow_path, HALF_DIM)
    if len(rgb) != len(flow):
      raise DataError(flow_path, f'{len(flow)} snippets but the rgb file has {len(rgb)}')
    return np.concatenate([rgb, flow], axis=1)


def _load_npy(path: str) -> np.ndarray:
  if not os.path.exists(path):
    raise DataError(path, 'missing feature file')
  try:
    with open(path, 'rb') as f:
      if f.read(6) != b'\x93NUMPY':
        raise DataError(path, 'not a .npy file (no NumPy header)')
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(path, f'unreadable .npy file ({type(e).__name__}: {e})') from None


def check_features(x, path: str, width: int, what: str = '') -> np.ndarray:
  """Features of one video must be a finite float [T > 0, width] array; returns float32."""
  what = f'{what}: ' if what else ''
  if not isinstance(x, np.ndarray) or x.dtype == object:
    raise DataError(path, f'{what}not a numeric array ({type(x).__name__})')
  if x.dtype.kind not in 'fiu':
    raise DataError(path, f'{what}features of dtype {x.dtype}, expected float32')
  if x.ndim != 2:
    raise DataError(path, f'{what}features of shape {x.shape}, expected [T, {width}]')
  if x.shape[1] != width:
    raise DataError(path, f'{what}feature width {x.shape[1]}, expected {width}')
  if x.shape[0] == 0:
    raise DataError(path, f'{what}zero-length video (0 snippets)')
  x = np.asarray(x, np.float32)
  finite = np.isfinite(x)
  if not finite.all():
    bad = ~finite
    row = int(np.argmax(bad.any(axis=1)))
    kinds = ' and '.join(k for k, m in (('NaN', np.isnan(x)), ('Inf', np.isinf(x))) if m.any())
    raise DataError(path, f'{what}{kinds} in features ({int(bad.sum())} non-finite values, '
                    f'first at snippet {row})')
  return x


# ---------------------------------------------------------------------------- W-TALC layout


class WtalcDataset(RawDataset):
  """W-TALC layout: one object .npy of [T, 2048] arrays in videoname.npy order."""

  layout = 'wtalc'

  def __init__(self, root: str, preferred_names: Sequence[str] = (), name: str | None = None):
    """`name`: the <Name> prefix; None picks the one present (or the first preferred)."""
    name = name or self._pick_name(root, preferred_names)
    self.name = name
    ann_dir = os.path.join(root, name + WTALC_ANNOTATIONS_SUFFIX)
    self.annotation_dir = ann_dir
    self.feature_path = os.path.join(root, name + WTALC_FEATURES_SUFFIX)
    arrays = {}
    for f in WTALC_REQUIRED:
      arrays[f] = _load_annotation(os.path.join(ann_dir, f), required=True)
    for f in ('classlist.npy', 'duration.npy'):
      arrays[f] = _load_annotation(os.path.join(ann_dir, f), required=False)

    names = [to_str(v) for v in arrays['videoname.npy'].reshape(-1)]
    n = len(names)
    for f in ('subset.npy', 'segments.npy', 'labels.npy', 'duration.npy'):
      if arrays[f] is not None and arrays[f].reshape(-1).shape[0] != n:
        raise DataError(os.path.join(ann_dir, f), f'{arrays[f].reshape(-1).shape[0]} entries '
                        f'but videoname.npy lists {n} videos')
    if len(set(names)) != n:
      dup = next(v for v in names if names.count(v) > 1)
      raise DataError(os.path.join(ann_dir, 'videoname.npy'), f'video {dup!r} is listed twice')
    subset = [to_str(v) for v in arrays['subset.npy'].reshape(-1)]
    durations = (arrays['duration.npy'].reshape(-1).astype(np.float64)
                 if arrays['duration.npy'] is not None else None)
    subsets = split_subsets(subset)
    seg_path = os.path.join(ann_dir, 'segments.npy')
    lab_path = os.path.join(ann_dir, 'labels.npy')
    split_of = {v: k for k, v in subsets.items()}

    self.row = {}  # video_id -> row of the feature dump
    self.rows: list[Video] = []  # every row, in dump order (split None: in no split)
    splits = {s: [] for s in SPLITS}
    for i, vid in enumerate(names):
      self.row[vid] = i
      split = split_of.get(subset[i])  # None: e.g. ActivityNet 'testing', in no split
      segs = _segments(arrays['segments.npy'][i], seg_path, vid)
      labels = arrays['labels.npy'][i]
      labels = [to_str(l) for l in (labels if labels is not None else [])]
      if len(labels) != len(segs):
        raise DataError(lab_path, f'video {vid!r}: {len(labels)} labels for {len(segs)} segments')
      duration = float(durations[i]) if durations is not None else None
      self.rows.append(Video(vid, split, segs, labels, duration))
      if split is not None:
        splits[split].append(self.rows[-1])

    if arrays['classlist.npy'] is not None:
      class_names = [to_str(c) for c in arrays['classlist.npy'].reshape(-1)]
      class_file = os.path.join(ann_dir, 'classlist.npy')
    else:
      class_names = sorted({l for v in splits['train'] + splits['test'] for l in v.labels})
      class_file = lab_path
    super().__init__(root, class_names, splits, subsets, lab_path)
    self.class_file = class_file
    self.num_rows = n
    self._dump = None

  @staticmethod
  def _pick_name(root: str, preferred: Sequence[str]) -> str:
    def names(suffix):
      pattern = os.path.join(glob.escape(root), '*' + suffix)
      return {os.path.basename(p)[:-len(suffix)] for p in glob.glob(pattern)}
    ann, feats = names(WTALC_ANNOTATIONS_SUFFIX), names(WTALC_FEATURES_SUFFIX)
    candidates = sorted(ann | feats)
    if len(candidates) > 1:
      both = sorted(ann & feats)
      chosen = [n for n in preferred if n in both] or both
      if len(chosen) != 1:
        raise DataError(root, f'several W-TALC datasets ({", ".join(candidates)}); keep one')
      candidates = chosen[:1]
    if not candidates:
      raise DataError(root, f'no <Name>{WTALC_ANNOTATIONS_SUFFIX}/ directory')
    name = candidates[0]
    if name not in ann:
      raise DataError(os.path.join(root, name + WTALC_ANNOTATIONS_SUFFIX), 'missing annotation '
                      'directory')
    return name

  def _rows(self) -> Sequence:
    if self._dump is None:
      path = self.feature_path
      if not os.path.exists(path):
        raise DataError(path, 'missing feature file')
      try:  # a pickled object array written by Python 2 needs encoding='bytes'
        dump = np.load(path, allow_pickle=True, encoding='bytes')
      except Exception as e:  # pylint: disable=broad-except  # unpickling raises anything
        raise DataError(path, f'unreadable .npy file ({type(e).__name__}: {e})') from None
      if not isinstance(dump, np.ndarray) or dump.ndim not in (1, 3):
        raise DataError(path, 'expected an object array of [T, 2048] feature arrays')
      if len(dump) > self.num_rows:
        raise DataError(path, f'{len(dump)} feature arrays but videoname.npy lists '
                        f'{self.num_rows} videos')
      self._dump = dump
    return self._dump

  def feature_file(self, video: Video) -> str:
    return self.feature_path

  def features(self, video: Video) -> np.ndarray:
    rows = self._rows()
    i = self.row[video.video_id]
    if i >= len(rows) or rows[i] is None:
      raise DataError(self.feature_path, f'video {video.video_id!r} of the {video.split} split '
                      f'(row {i} of videoname.npy) has no features: the file holds '
                      f'{len(rows)} arrays')
    return check_features(rows[i], self.feature_path, FEATURE_DIM,
                          f'video {video.video_id!r} (row {i})')


def _load_annotation(path: str, required: bool):
  if not os.path.exists(path):
    if required:
      raise DataError(path, 'missing annotation file')
    return None
  try:
    try:
      return np.load(path, allow_pickle=True)
    except UnicodeError:  # Python 2 pickles of non-ASCII str: keep them bytes, to_str decodes
      return np.load(path, allow_pickle=True, encoding='bytes')
  except Exception as e:  # pylint: disable=broad-except  # unpickling raises anything
    raise DataError(path, f'unreadable .npy file ({type(e).__name__}: {e})') from None


def _segments(value, path: str, vid: str) -> np.ndarray:
  try:
    segs = np.asarray(value if value is not None else [], np.float64).reshape(-1, 2)
  except (TypeError, ValueError):
    raise DataError(path, f'video {vid!r}: segments are not a list of [start, end]') from None
  return segs


# ---------------------------------------------------------------------------- validation


def check_annotations(raw: RawDataset) -> None:
  """Labels in the class list, segments sane, both splits non-empty. Reads no features."""
  classes = set(raw.class_names)
  if len(classes) != len(raw.class_names):
    raise DataError(raw.class_file, 'class list has duplicates')
  if not raw.class_names:
    raise DataError(raw.class_file, 'empty class list')
  for split in SPLITS:
    if not raw.splits[split]:
      raise DataError(raw.annotation_file, f'no videos in the {split} split (source subset '
                      f'{raw.subsets[split]!r})')
  for video in raw.videos():
    for label in video.labels:
      if label not in classes:
        raise DataError(raw.annotation_file, f'video {video.video_id!r}: label {label!r} is not '
                        f'in the class list ({os.path.basename(raw.class_file)})')
    segs = video.segments
    bad = ~np.isfinite(segs).all(axis=1) | (segs[:, 0] < 0) | (segs[:, 1] < segs[:, 0])
    if bad.any():
      s, e = segs[int(np.argmax(bad))]
      raise DataError(raw.annotation_file, f'video {video.video_id!r}: segment [{s}, {e}] is '
                      'negative, reversed or not finite')
    if video.duration is not None and not (np.isfinite(video.duration) and video.duration > 0):
      raise DataError(raw.annotation_file, f'video {video.video_id!r}: duration '
                      f'{video.duration} is not positive')


def validate(raw: RawDataset,
             progress: Callable[[int, int], None] | None = None) -> dict[str, list[int]]:
  """Checks every annotation and every feature file; returns snippet counts per split.

  Raises:
    DataError: the first problem found, naming its file.
  """
  check_annotations(raw)
  total = sum(len(v) for v in raw.splits.values())
  lengths, done = {}, 0
  for split in SPLITS:
    lengths[split] = []
    for video in raw.splits[split]:
      lengths[split].append(int(raw.features(video).shape[0]))
      done += 1
      if progress is not None:
        progress(done, total)
  return lengths
