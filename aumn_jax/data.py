"""Built datasets -> per-video NumPy records, and the ground truth the evaluator scores against.

Holds: `load_split` (a random-access, picklable view of one split of a dataset built by
`python -m data_prep.build`), `ground_truth` (that split as an ActivityNet-style gt dict),
and the error types every data path raises (`DataError`, `DatasetNotFoundError`).

Deliberately doesn't: read raw feature dumps (data_prep/layouts.py), build datasets
(data_prep/builders.py), crop, pad or batch (aumn_jax/input_pipeline.py), or import TensorFlow
(array_record + `as_data_source` need none).

A record (the TFDS feature names are exactly these keys):
  video_id        str
  features        float32 [T, 2048]  rgb 1024 || flow 1024; may be a read-only view, copy
                                     before writing into it
  labels          float32 [C]        multi-hot video-level labels
  segments        float32 [N, 2]     ground-truth [start_s, end_s] (N may be 0)
  segment_labels  int32   [N]        class index per segment
  duration        float32            seconds
  fps             float32            feature frame rate
  snippet_stride  int32              frames per snippet: snippet i covers
                                     [i * stride / fps, (i + 1) * stride / fps) seconds
  num_snippets    int32              T
Everything except `features` and `labels` is also kept in the dataset's metadata, so lengths,
per-video timing and the ground truth are available without decoding a single feature.
"""
import os
from typing import Any

import numpy as np

from aumn_jax import errors

# Builder version every dataset is written at (data_prep/builders.py imports it).
VERSION = '1.0.0'
# The datasets data_prep.build can build (config.data.dataset is one of these).
DATASETS = ('thumos14', 'activitynet12', 'activitynet13', 'synthetic')


class DataError(errors.UserError):
  """Bad input data: one line naming the file and what is wrong with it."""

  def __init__(self, path: Any, problem: str):
    self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    self.problem = ' '.join(str(problem).split())  # one line, whatever the cause said
    super().__init__(f'{self.path}: {self.problem}')


class DatasetNotFoundError(DataError):
  """The requested dataset has not been built under data_dir."""


def build_command(dataset: str, data_dir: str) -> str:
  """The command that builds `dataset` into `data_dir` (for error messages)."""
  if dataset == 'synthetic':
    return (f'python -m data_prep.synthetic --out RAW --layout um --preset tiny && '
            f'python -m data_prep.build --dataset synthetic --manual_dir RAW --data_dir {data_dir}')
  return f'python -m data_prep.build --dataset {dataset} --manual_dir RAW --data_dir {data_dir}'


def dataset_dir(data_dir: str, dataset: str) -> str:
  """data_dir/<dataset>/<version> of a built dataset; DatasetNotFoundError if there is none."""
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  path = os.path.join(data_dir, dataset, VERSION)
  if not os.path.isfile(os.path.join(path, 'dataset_info.json')):
    raise DatasetNotFoundError(
        path, f'dataset {dataset!r} is not built (no dataset_info.json); build it with: '
        f'{build_command(dataset, data_dir)}')
  return path


class VideoSplit:
  """One split of a built dataset: len(), split[i] -> record dict, plus cheap per-video metadata.

  Random access through `tfds.builder_from_directory(...).as_data_source()`. Pickles as its
  path and split name; the reader is reopened lazily in the process that unpickles it.
  """

  def __init__(self, path: str, split: str):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.path = path
    self.split = split
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
      raise DataError(path, f'no split {split!r}; the dataset has {sorted(builder.info.splits)}')
    metadata = dict(builder.info.metadata or {})
    if 'splits' not in metadata or 'class_names' not in metadata:
      raise DataError(os.path.join(path, 'metadata.json'),
                      'missing class_names/splits: not built by data_prep.build')
    index = metadata['splits'][split]
    self.class_names: list[str] = list(metadata['class_names'])
    self.num_classes = len(self.class_names)
    self.video_ids: list[str] = list(index['video_ids'])
    self.lengths = np.asarray(index['num_snippets'], np.int64)
    self.durations = np.asarray(index['durations'], np.float64)
    self.fps = float(metadata['fps'])
    self.snippet_stride = int(metadata['snippet_stride'])
    self.subset_name: str = metadata['subsets'][split]  # as the source called it
    self._segments = index['segments']
    self._segment_labels = index['segment_labels']
    self._source = None
    if len(self.video_ids) != builder.info.splits[split].num_examples:
      raise DataError(path, f'metadata lists {len(self.video_ids)} videos in {split!r}, '
                      f'the records {builder.info.splits[split].num_examples}')

  def _data_source(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      self._source = tfds.builder_from_directory(self.path).as_data_source(split=self.split)
    return self._source

  def __getstate__(self):
    state = dict(self.__dict__)
    state['_source'] = None  # reopened on first access after unpickling
    return state

  def __len__(self) -> int:
    return len(self.video_ids)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not -len(self) <= index < len(self):
      raise IndexError(f'video index {index} out of range for {len(self)} videos')
    ex = self._data_source()[int(index) % len(self)]
    return {
        'video_id': _to_str(ex['video_id']),
        'features': ex['features'],
        'labels': np.asarray(ex['labels'], np.float32),
        'segments': np.asarray(ex['segments'], np.float32).reshape(-1, 2),
        'segment_labels': np.asarray(ex['segment_labels'], np.int32),
        'duration': np.float32(ex['duration']),
        'fps': np.float32(ex['fps']),
        'snippet_stride': np.int32(ex['snippet_stride']),
        'num_snippets': np.int32(ex['num_snippets']),
    }

  def meta(self, index: int) -> dict[str, Any]:
    """Per-video timing without decoding features: video_id, duration, fps, snippet_stride,
    num_snippets."""
    return {'video_id': self.video_ids[index], 'duration': float(self.durations[index]),
            'fps': self.fps, 'snippet_stride': self.snippet_stride,
            'num_snippets': int(self.lengths[index])}

  def annotations(self, index: int) -> list[dict[str, Any]]:
    """Ground-truth instances of one video: [{'segment': [s, e], 'label': name}, ...]."""
    return [{'segment': [float(s), float(e)], 'label': self.class_names[c]}
            for (s, e), c in zip(self._segments[index], self._segment_labels[index])]

  def snippet_classes(self, index: int, num_snippets: int) -> np.ndarray:
    """bool [num_snippets, C]: snippet t (covering [t, t + 1) * stride / fps seconds) lies at
    least half inside a ground-truth instance of class c. For diagnostics only: training never
    sees snippet labels."""
    seconds = self.snippet_stride / self.fps
    starts = np.arange(num_snippets) * seconds
    covered = np.zeros((num_snippets, self.num_classes))
    for (s, e), c in zip(self._segments[index], self._segment_labels[index]):
      overlap = (np.minimum(starts + seconds, e) - np.maximum(starts, s)) / seconds
      covered[:, c] = np.maximum(covered[:, c], np.clip(overlap, 0.0, 1.0))
    return covered >= 0.5

  def __repr__(self):
    return (f'VideoSplit({self.path!r}, {self.split!r}: {len(self)} videos, '
            f'{self.num_classes} classes)')


def load_split(data_dir: str, dataset: str, split: str) -> VideoSplit:
  """Opens split 'train' or 'test' of `dataset` built under `data_dir`.

  Args:
    data_dir: the --data_dir the dataset was built into (`~` expanded).
    dataset: thumos14 | activitynet12 | activitynet13 | synthetic.
    split: 'train' or 'test' (whatever the source calls them).

  Returns:
    A VideoSplit.

  Raises:
    DatasetNotFoundError: the dataset is not built (the message has the build command).
    DataError: the split does not exist or the directory was not written by data_prep.build.
  """
  return VideoSplit(dataset_dir(data_dir, dataset), split)


def ground_truth(split: VideoSplit, subset_name: str) -> dict[str, Any]:
  """The split as an ActivityNet-style ground-truth dict, every video under `subset_name`.

  {"database": {vid: {"subset": subset_name, "duration": float,
                      "annotations": [{"segment": [s, e], "label": name}]}}}
  """
  return {'database': {
      vid: {'subset': subset_name, 'duration': float(split.durations[i]),
            'annotations': split.annotations(i)}
      for i, vid in enumerate(split.video_ids)}}


def _to_str(value) -> str:
  return value.decode('utf-8') if isinstance(value, (bytes, np.bytes_)) else str(value)
