"""TFDS builders of the four datasets: thumos14, activitynet12, activitynet13, synthetic.

Holds one GeneratorBasedBuilder per dataset over the layout readers of data_prep/layouts.py.
All four write the same features (the per-video record of aumn_jax/data.py) as array_record,
with splits 'train' and 'test' and, in the dataset's metadata.json, what aumn_jax/data.py needs
without decoding features: class names, per-video ids, lengths, durations and ground truth.

Deliberately doesn't: pick the output directory, clean up after a failure or print errors
(data_prep/build.py does, and is the supported entry point); or need TensorFlow.

Also works through TFDS's own CLI (the layout is auto-detected):
  PYTHONPATH=. tfds build thumos14 --imports data_prep.builders --manual_dir RAW \
      --data_dir DATA --file_format array_record
"""
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from aumn_jax import data as data_lib
from data_prep import layouts

_DESCRIPTION = """\
Pre-extracted two-stream I3D features of untrimmed videos for weakly supervised temporal
action localization: 16-frame snippets at 25 fps, rgb 1024 || flow 1024 per snippet, with
video-level labels and the ground-truth action instances (seconds) of the source's annotation
files. Split 'train' is the source's training subset, 'test' its evaluation subset.
"""

_MANUAL = """\
Put the feature dump in manual_dir in either public layout (auto-detected):
  UM / BaS-Net: gt.json, split_train.txt, split_test.txt, [classlist.txt, durations.json],
                features/{train,test}/{rgb,flow}/<video_id>.npy   ([T, 1024] float32 each)
  W-TALC:       <Name>-I3D-JOINTFeatures.npy (object array of [T, 2048] float32, videoname order)
                <Name>-Annotations/{videoname,subset,segments,labels,classlist,duration}.npy
"""


def features_dict() -> tfds.features.FeaturesDict:
  """The record of aumn_jax/data.py. Feature arrays are stored as raw bytes (Encoding.BYTES):
  a float list proto of 600k values writes ~12x slower."""
  return tfds.features.FeaturesDict({
      'video_id': tfds.features.Text(),
      'features': tfds.features.Tensor(shape=(None, layouts.FEATURE_DIM), dtype=np.float32,
                                       encoding=tfds.features.Encoding.BYTES),
      'labels': tfds.features.Tensor(shape=(None,), dtype=np.float32),
      'segments': tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
      'segment_labels': tfds.features.Tensor(shape=(None,), dtype=np.int32),
      'duration': tfds.features.Scalar(dtype=np.float32),
      'fps': tfds.features.Scalar(dtype=np.float32),
      'snippet_stride': tfds.features.Scalar(dtype=np.int32),
      'num_snippets': tfds.features.Scalar(dtype=np.int32),
  })


def _f32(x) -> float:
  """The float32 a record stores, as the shortest decimal that reads back to it (18.6, not
  18.600000381469727), so metadata and records agree and gt JSON stays readable."""
  return float(str(np.float32(x)))


def video_duration(raw: layouts.RawDataset, video: layouts.Video, num_snippets: int) -> float:
  if video.duration is not None:
    return video.duration
  return num_snippets * raw.snippet_stride / raw.fps


def make_record(raw: layouts.RawDataset, video: layouts.Video,
                features: np.ndarray) -> dict[str, Any]:
  index = {name: i for i, name in enumerate(raw.class_names)}
  segment_labels = np.asarray([index[l] for l in video.labels], np.int32)
  labels = np.zeros(len(raw.class_names), np.float32)
  labels[segment_labels] = 1.0
  return {
      'video_id': video.video_id,
      'features': features,
      'labels': labels,
      'segments': video.segments.astype(np.float32).reshape(-1, 2),
      'segment_labels': segment_labels,
      'duration': np.float32(video_duration(raw, video, len(features))),
      'fps': np.float32(raw.fps),
      'snippet_stride': np.int32(raw.snippet_stride),
      'num_snippets': np.int32(len(features)),
  }


def describe(raw: layouts.RawDataset, lengths: dict[str, list[int]]) -> dict[str, Any]:
  """metadata.json: everything but features, per split in record order."""
  index = {name: i for i, name in enumerate(raw.class_names)}
  splits = {}
  for split in layouts.SPLITS:
    videos = raw.splits[split]
    splits[split] = {
        'video_ids': [v.video_id for v in videos],
        'num_snippets': [int(t) for t in lengths[split]],
        'durations': [_f32(video_duration(raw, v, t)) for v, t in zip(videos, lengths[split])],
        'segments': [[[_f32(s), _f32(e)] for s, e in v.segments] for v in videos],
        'segment_labels': [[index[l] for l in v.labels] for v in videos],
    }
  return {'class_names': list(raw.class_names), 'layout': raw.layout,
          'subsets': dict(raw.subsets), 'fps': raw.fps, 'snippet_stride': raw.snippet_stride,
          'feature_dim': layouts.FEATURE_DIM, 'splits': splits}


class WtalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the four datasets; a subclass only names itself and its W-TALC file prefix."""

  VERSION = tfds.core.Version(data_lib.VERSION)
  RELEASE_NOTES = {data_lib.VERSION: 'I3D features, UM and W-TALC layouts, splits train/test.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL
  WTALC_NAMES: tuple[str, ...] = ()  # preferred <Name> if a W-TALC dir holds several
  HOMEPAGE = ''

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup of a builder inside a package imports `importlib_resources`, which
    # tensorflow-datasets does not pin and we do not install.
    return epath.Path(__file__)

  def __init__(self, *, layout: str = 'auto', raw: layouts.RawDataset | None = None,
               lengths: dict[str, list[int]] | None = None, **kwargs):
    """`raw` + `lengths`: an already read and validated dump (data_prep.build passes them so
    nothing is read twice); without them the manual_dir is read and validated here."""
    self._layout = layout
    self._raw = raw
    self._lengths = lengths
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=_DESCRIPTION, features=features_dict(),
        homepage=self.HOMEPAGE or None, disable_shuffling=True,  # keep the source's video order
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    raw = self._raw
    if raw is None:
      raw = layouts.read(str(dl_manager.manual_dir), self._layout, self.WTALC_NAMES)
    lengths = self._lengths if self._lengths is not None else layouts.validate(raw)
    self.info.metadata.update(describe(raw, lengths))
    return {split: self._generate_examples(raw, split, lengths[split])
            for split in layouts.SPLITS}

  def _generate_examples(self, raw, split, lengths):
    for video, length in zip(raw.splits[split], lengths):
      features = raw.features(video)
      if len(features) != length:  # the dump changed since it was validated
        raise data_lib.DataError(raw.feature_file(video), f'video {video.video_id!r} changed '
                                 'while the dataset was being built')
      yield video.video_id, make_record(raw, video, features)


class Thumos14(WtalBuilder):
  """THUMOS14, 20 classes: validation videos train, test videos test (200 / 210 UM, 212 W-TALC)."""
  name = 'thumos14'
  WTALC_NAMES = layouts.WTALC_NAMES[name]
  HOMEPAGE = 'https://www.crcv.ucf.edu/THUMOS14/'


class Activitynet12(WtalBuilder):
  """ActivityNet 1.2, 100 classes: training videos train, validation videos test."""
  name = 'activitynet12'
  WTALC_NAMES = layouts.WTALC_NAMES[name]
  HOMEPAGE = 'http://activity-net.org/'


class Activitynet13(WtalBuilder):
  """ActivityNet 1.3, 200 classes: training videos train, validation videos test."""
  name = 'activitynet13'
  WTALC_NAMES = layouts.WTALC_NAMES[name]
  HOMEPAGE = 'http://activity-net.org/'


class Synthetic(WtalBuilder):
  """Action-unit structured synthetic features written by data_prep.synthetic."""
  name = 'synthetic'
  WTALC_NAMES = layouts.WTALC_NAMES[name]


BUILDERS = {cls.name: cls for cls in (Thumos14, Activitynet12, Activitynet13, Synthetic)}
