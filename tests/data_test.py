"""Tests for aumn_jax/data.py on the tiny synthetic dataset (conftest.tiny_data_dir)."""
import os
import pickle

import numpy as np
import pytest

from aumn_jax import data

KEYS = {'video_id': str, 'features': np.float32, 'labels': np.float32, 'segments': np.float32,
        'segment_labels': np.int32, 'duration': np.float32, 'fps': np.float32,
        'snippet_stride': np.int32, 'num_snippets': np.int32}


@pytest.fixture(scope='module', params=['train', 'test'])
def split(request, tiny_data_dir):
  return data.load_split(tiny_data_dir, 'synthetic', request.param)


def test_records_have_the_contract_keys_dtypes_and_shapes(split):
  assert len(split) > 0 and split.num_classes == len(split.class_names) == 4
  for i in range(len(split)):
    r = split[i]
    assert set(r) == set(KEYS)
    assert isinstance(r['video_id'], str)
    for key, dtype in KEYS.items():
      if key != 'video_id':
        assert r[key].dtype == dtype, key
    t = r['features'].shape[0]
    assert r['features'].shape == (t, 2048) and t == r['num_snippets'] == split.lengths[i]
    assert r['labels'].shape == (split.num_classes,)
    n = len(r['segment_labels'])
    assert r['segments'].shape == (n, 2)
    # Video-level labels are exactly the classes of its segments.
    expected = np.zeros(split.num_classes, np.float32)
    expected[r['segment_labels']] = 1
    np.testing.assert_array_equal(r['labels'], expected)
    assert r['fps'] == 25.0 and r['snippet_stride'] == 16
    # T = round(duration * fps / stride): the snippets cover the video.
    assert abs(r['duration'] * 25 / 16 - t) <= 0.5 + 1e-3
    assert np.all(r['features'] >= 0) and np.all(np.isfinite(r['features']))


def test_cheap_metadata_agrees_with_the_records(split):
  assert split.lengths.dtype == np.int64 and split.lengths.shape == (len(split),)
  for i in range(len(split)):
    r = split[i]
    meta = split.meta(i)
    assert meta['video_id'] == r['video_id'] == split.video_ids[i]
    assert meta['num_snippets'] == r['num_snippets']
    assert np.float32(meta['duration']) == r['duration']
    assert (meta['fps'], meta['snippet_stride']) == (r['fps'], r['snippet_stride'])
    anns = split.annotations(i)
    np.testing.assert_array_equal(
        np.asarray([a['segment'] for a in anns], np.float32).reshape(-1, 2), r['segments'])
    assert [a['label'] for a in anns] == [split.class_names[c] for c in r['segment_labels']]


def test_ground_truth_is_the_activitynet_dict_of_the_split(split):
  gt = data.ground_truth(split, 'some_subset')
  assert list(gt) == ['database'] and list(gt['database']) == split.video_ids
  for i, vid in enumerate(split.video_ids):
    entry = gt['database'][vid]
    assert entry['subset'] == 'some_subset'
    assert entry['duration'] == pytest.approx(float(split[i]['duration']), abs=1e-4)
    for ann in entry['annotations']:
      assert ann['label'] in split.class_names
      # Times read back as the decimals written (12.7, not 12.699999809).
      assert ann['segment'] == [round(x, 3) for x in ann['segment']]


def test_pickles_and_reads_after_unpickling(split):
  first = split[0]  # opens the reader: it must not travel in the pickle
  clone = pickle.loads(pickle.dumps(split))
  assert clone.video_ids == split.video_ids and clone.class_names == split.class_names
  np.testing.assert_array_equal(clone.lengths, split.lengths)
  np.testing.assert_array_equal(clone[0]['features'], first['features'])
  np.testing.assert_array_equal(clone[-1]['features'], split[len(split) - 1]['features'])


def test_index_out_of_range_raises_index_error(split):
  with pytest.raises(IndexError):
    split[len(split)]


def test_missing_dataset_names_the_path_and_the_build_command(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load_split(str(tmp_path), 'thumos14', 'train')
  message = str(e.value)
  assert os.path.join(str(tmp_path), 'thumos14', data.VERSION) in message
  assert 'python -m data_prep.build --dataset thumos14' in message
  assert isinstance(e.value, data.DataError)  # train.py's one-line error path


def test_unknown_split_is_a_data_error(tiny_data_dir):
  with pytest.raises(data.DataError, match='validation'):
    data.load_split(tiny_data_dir, 'synthetic', 'validation')


def test_data_error_is_one_line():
  e = data.DataError('/x/y.npy', 'bad\nthing  here')
  assert str(e) == '/x/y.npy: bad thing here'
