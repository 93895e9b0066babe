"""Tests for data_prep/layouts.py, data_prep/builders.py and data_prep/build.py.

Small dumps are written by data_prep.synthetic from hand-made or sub-sampled real annotation
files, then broken one way at a time: every bad input must give one line naming the file, a
non-zero exit and nothing left in data_dir. One slow test builds THUMOS14 from the real
annotation files of ../shared/data in both layouts and checks it against those files, read
here independently of data_prep.layouts.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import conftest
from aumn_jax import data
from data_prep import build
from data_prep import builders
from data_prep import layouts
from data_prep import synthetic

SHARED = conftest.SHARED_DATA
TH_UM = os.path.join(SHARED, 'thumos14_um')
TH_WTALC = os.path.join(SHARED, 'thumos14_wtalc', 'Thumos14reduced-Annotations')


def _ann(start, end, label):
  return {'segment': [start, end], 'label': label}  # UM's gt.json: seconds as strings


# 3 training and 2 test videos of a few seconds: dumps of ~1 MB.
MINI_GT = {'database': {
    'vid_a': {'subset': 'train', 'duration': 9.9,
              'annotations': [_ann('1.0', '3.5', 'Jump'), _ann('6.0', '7.2', 'Jump')]},
    'vid_b': {'subset': 'train', 'duration': 6.4,
              'annotations': [_ann('0.5', '2.0', 'Run'), _ann('2.0', '4.4', 'Jump')]},
    'vid_c': {'subset': 'train', 'duration': 12.0, 'annotations': [_ann('4.0', '11.0', 'Throw')]},
    'vid_d': {'subset': 'test', 'duration': 8.0,
              'annotations': [_ann('2.0', '5.0', 'Run'), _ann('5.5', '7.9', 'Throw')]},
    'vid_e': {'subset': 'test', 'duration': 5.1, 'annotations': [_ann('1.1', '2.2', 'Jump')]},
}}


def mini_dump(tmp_path, layout, name='raw'):
  """A consistent 5-video dump in `layout`, generated from MINI_GT."""
  src = tmp_path / f'mini_src_{layout}_{name}'
  src.mkdir()
  (src / 'gt.json').write_text(json.dumps(MINI_GT))
  return synthetic.generate(str(tmp_path / name), layout, 'tiny', seed=3,
                            annotations=str(src / 'gt.json'))


def run_main(argv, capsys):
  code = build.main(argv)
  out, err = capsys.readouterr()
  return code, out, err


def assert_clean_failure(code, err, data_dir, *needles):
  """Exit 1, exactly one stderr line `error: <file>: <problem>` with the needles in it, and
  no dataset, temporary or incomplete directory left in data_dir."""
  assert code == 1
  lines = err.splitlines()
  assert len(lines) == 1, err
  assert lines[0].startswith('error: ')
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  assert not os.path.exists(data_dir) or os.listdir(data_dir) == [], os.listdir(data_dir)


# ---------------------------------------------------------------------------- good input


@pytest.mark.parametrize('layout', layouts.LAYOUTS)
def test_mini_dump_builds_with_the_annotations_it_was_made_from(tmp_path, capsys, layout):
  raw = mini_dump(tmp_path, layout)
  data_dir = str(tmp_path / 'data')
  code, out, err = run_main(['--dataset', 'synthetic', '--manual_dir', raw,
                             '--data_dir', data_dir], capsys)
  assert code == 0, err
  assert out.splitlines()[-1] == os.path.join(data_dir, 'synthetic', data.VERSION)
  assert sorted(os.listdir(data_dir)) == ['synthetic']  # no temporary directory left
  classes = sorted({a['label'] for v in MINI_GT['database'].values() for a in v['annotations']})
  for split, subset in (('train', 'train'), ('test', 'test')):
    videos = [v for v, e in MINI_GT['database'].items() if e['subset'] == subset]
    ds = data.load_split(data_dir, 'synthetic', split)
    assert ds.video_ids == videos and ds.class_names == classes
    for i, vid in enumerate(videos):
      r = ds[i]
      entry = MINI_GT['database'][vid]
      assert r['video_id'] == vid
      assert r['duration'] == np.float32(entry['duration'])
      assert r['num_snippets'] == round(entry['duration'] * 25 / 16)
      np.testing.assert_array_equal(
          r['segments'], np.asarray([[float(x) for x in a['segment']]
                                     for a in entry['annotations']], np.float32))
      assert [classes[c] for c in r['segment_labels']] == [
          a['label'] for a in entry['annotations']]


def test_existing_dataset_is_kept_unless_overwrite(tmp_path, capsys):
  raw = mini_dump(tmp_path, 'um')
  data_dir = str(tmp_path / 'data')
  path = build.build('synthetic', raw, data_dir)
  stamp = os.path.join(path, 'stamp')
  open(stamp, 'w').close()
  assert build.build('synthetic', raw, data_dir) == path and os.path.exists(stamp)
  assert build.build('synthetic', raw, data_dir, overwrite=True) == path
  assert not os.path.exists(stamp)
  assert sorted(os.listdir(data_dir)) == ['synthetic']


def test_prepare_data_dir_generates_the_synthetic_default_once(tmp_path, capsys):
  from configs import synthetic as synthetic_config
  data_cfg = synthetic_config.get_config().data
  data_cfg.data_dir = str(tmp_path / 'data')
  data_cfg.synthetic_preset = 'tiny'
  data_dir = build.prepare_data_dir(data_cfg)
  assert data_dir == str(tmp_path / 'data')
  assert 'first use only' in capsys.readouterr().out
  split = data.load_split(data_dir, 'synthetic', 'train')
  assert len(split) == synthetic.PRESETS['tiny'].num_train
  assert sorted(os.listdir(data_dir)) == ['.build.lock', 'synthetic']  # the raw dump is gone
  assert build.prepare_data_dir(data_cfg) == data_dir
  assert capsys.readouterr().out == ''  # built: nothing generated again


def test_prepare_data_dir_refuses_a_file_in_one_line_and_keeps_it(tmp_path):
  from configs import synthetic as synthetic_config
  data_cfg = synthetic_config.get_config().data
  data_cfg.data_dir = str(tmp_path / 'a_file')
  (tmp_path / 'a_file').write_text('mine')
  with pytest.raises(data.DataError, match=r'a_file: is a file, not a directory \(config.data'):
    build.prepare_data_dir(data_cfg)
  assert (tmp_path / 'a_file').read_text() == 'mine'


def test_prepare_data_dir_never_generates_a_real_dataset(tmp_path):
  from configs import thumos as thumos_config
  data_cfg = thumos_config.get_config().data
  data_cfg.data_dir = str(tmp_path / 'data')
  assert build.prepare_data_dir(data_cfg) == data_cfg.data_dir
  assert not os.path.exists(data_cfg.data_dir)
  with pytest.raises(data.DatasetNotFoundError, match='data_prep.build --dataset thumos14'):
    data.load_split(data_cfg.data_dir, data_cfg.dataset, 'train')


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, capsys):
  raw = mini_dump(tmp_path, 'um')
  data_dir = str(tmp_path / 'data')
  path = build.build('synthetic', raw, data_dir)
  before = {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}
  os.remove(os.path.join(raw, 'features', 'test', 'rgb', 'vid_e.npy'))
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', raw, '--data_dir', data_dir,
                           '--overwrite'], capsys)
  assert code == 1 and 'vid_e.npy' in err
  assert {f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)} == before
  assert sorted(os.listdir(data_dir)) == ['synthetic']


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
  # Validation passed, then the writer fails midway (a disk error, a dump changing under us).
  raw = mini_dump(tmp_path, 'um')
  data_dir = str(tmp_path / 'data')
  calls = []

  def failing_make_record(*args):
    calls.append(1)
    if len(calls) == 3:
      raise data.DataError('somewhere.npy', 'failed while writing')
    return real_make_record(*args)

  real_make_record = builders.make_record
  monkeypatch.setattr(builders, 'make_record', failing_make_record)
  with pytest.raises(data.DataError, match='failed while writing'):
    build.build('synthetic', raw, data_dir)
  assert not os.path.exists(data_dir)


@pytest.fixture
def full_disk(tmpfs):
  return tmpfs('1m')


@pytest.mark.parametrize('checked', [True, False], ids=['refused_up_front', 'fills_while_writing'])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch, full_disk,
                                                     checked):
  raw = mini_dump(tmp_path, 'um')
  data_dir = str(full_disk / 'data')
  (full_disk / 'ballast').write_bytes(b'0' * 900_000)  # the mini dataset needs ~0.5 MB
  if not checked:  # another writer fills the disk after the space check
    monkeypatch.setattr(build.files, 'space_shortfall', lambda *a: None)
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', raw, '--data_dir', data_dir],
                          capsys)
  needle = 'needs about' if checked else 'No space left on device'
  assert_clean_failure(code, err, data_dir, data_dir, needle)
  assert sorted(os.listdir(full_disk)) == ['ballast']


@pytest.mark.parametrize('checked', [True, False], ids=['refused_up_front', 'fills_while_writing'])
def test_first_use_generation_on_a_full_disk_is_one_line_and_leaves_nothing(
    monkeypatch, full_disk, checked):
  from configs import synthetic as synthetic_config
  data_cfg = synthetic_config.get_config().data
  data_cfg.data_dir = str(full_disk / 'data')
  data_cfg.synthetic_preset = 'tiny'  # ~36 MiB of features
  if not checked:
    monkeypatch.setattr(synthetic.files, 'space_shortfall', lambda *a: None)
  with pytest.raises(data.DataError) as failure:
    build.prepare_data_dir(data_cfg)
  message = str(failure.value)
  assert '\n' not in message and ('needs about' if checked else 'file system is full') in message
  assert os.listdir(full_disk) == []


def test_tfds_build_command_gives_the_same_dataset(tmp_path):
  # TFDS's `tfds build` CLI entry point imports TensorFlow at start-up (its convert_format
  # command), so drive its build command directly: the builder reads manual_dir itself.
  simple_parsing = pytest.importorskip('simple_parsing')
  from tensorflow_datasets.scripts.cli import build as tfds_build  # pylint: disable=g-import-not-at-top,line-too-long
  raw = mini_dump(tmp_path, 'wtalc')
  args = simple_parsing.parse(tfds_build.Args, args=[
      'synthetic', '--imports', 'data_prep.builders', '--manual_dir', raw,
      '--data_dir', str(tmp_path / 'tfds'), '--file_format', 'array_record'])
  args.execute()
  build.build('synthetic', raw, str(tmp_path / 'ours'))
  for split in ('train', 'test'):
    a = data.load_split(str(tmp_path / 'tfds'), 'synthetic', split)
    b = data.load_split(str(tmp_path / 'ours'), 'synthetic', split)
    assert a.video_ids == b.video_ids and a.class_names == b.class_names
    for i in range(len(a)):
      np.testing.assert_array_equal(a[i]['features'], b[i]['features'])


def test_cli_subprocess_error_is_one_line_without_traceback(tmp_path):
  raw = mini_dump(tmp_path, 'um')
  bad = os.path.join(raw, 'features', 'train', 'flow', 'vid_b.npy')
  np.save(bad, np.full((10, 1024), np.nan, np.float32))
  data_dir = tmp_path / 'data'
  proc = subprocess.run(
      [sys.executable, '-m', 'data_prep.build', '--dataset', 'synthetic', '--manual_dir', raw,
       '--data_dir', str(data_dir)], cwd=conftest.REPO, capture_output=True, text=True,
      timeout=120, check=False)
  assert_clean_failure(proc.returncode, proc.stderr, str(data_dir), bad, 'NaN')


# ---------------------------------------------------------------------------- bad input: UM


def _um_gt(raw):
  with open(os.path.join(raw, 'gt.json'), encoding='utf-8') as f:
    return json.load(f)


def _write_gt(raw, gt):
  with open(os.path.join(raw, 'gt.json'), 'w', encoding='utf-8') as f:
    json.dump(gt, f)


def _break_um(raw, case):
  """Breaks the UM dump at `raw`; returns the substrings the error line must contain."""
  feat = lambda split, stream, vid: os.path.join(raw, 'features', split, stream, vid + '.npy')
  if case == 'missing_feature_file':
    os.remove(feat('train', 'flow', 'vid_b'))
    return [feat('train', 'flow', 'vid_b'), 'missing feature file']
  if case == 'corrupt_npy':
    path = feat('test', 'rgb', 'vid_d')
    with open(path, 'r+b') as f:
      f.truncate(100)
    return [path, 'unreadable']
  if case == 'not_npy':
    path = feat('train', 'rgb', 'vid_a')
    with open(path, 'wb') as f:
      f.write(b'this is not a numpy file')
    return [path, 'not a .npy file']
  if case == 'wrong_width':
    np.save(feat('train', 'rgb', 'vid_c'), np.ones((19, 1000), np.float32))
    return [feat('train', 'rgb', 'vid_c'), 'width 1000, expected 1024']
  if case == 'rgb_flow_length_mismatch':
    np.save(feat('train', 'flow', 'vid_a'), np.ones((7, 1024), np.float32))
    return [feat('train', 'flow', 'vid_a'), '7 snippets', 'rgb file has 15']
  if case == 'nan':
    x = np.load(feat('test', 'flow', 'vid_e'))
    x[3, 5] = np.nan
    np.save(feat('test', 'flow', 'vid_e'), x)
    return [feat('test', 'flow', 'vid_e'), 'NaN', 'snippet 3']
  if case == 'inf':
    x = np.load(feat('train', 'rgb', 'vid_b'))
    x[2, 0] = -np.inf
    np.save(feat('train', 'rgb', 'vid_b'), x)
    return [feat('train', 'rgb', 'vid_b'), 'Inf']
  if case == 'zero_length':
    np.save(feat('test', 'rgb', 'vid_d'), np.zeros((0, 1024), np.float32))
    np.save(feat('test', 'flow', 'vid_d'), np.zeros((0, 1024), np.float32))
    return [feat('test', 'rgb', 'vid_d'), 'zero-length']
  if case == 'unknown_label':
    gt = _um_gt(raw)
    gt['database']['vid_d']['annotations'][1]['label'] = 'Swim'
    _write_gt(raw, gt)
    return [os.path.join(raw, 'gt.json'), "'vid_d'", "label 'Swim'", 'classlist.txt']
  if case == 'video_without_features':
    gt = _um_gt(raw)
    gt['database']['vid_f'] = {'subset': 'test', 'annotations': []}
    _write_gt(raw, gt)
    with open(os.path.join(raw, 'split_test.txt'), 'a', encoding='utf-8') as f:
      f.write('vid_f\n')
    return [feat('test', 'rgb', 'vid_f'), "'vid_f'", 'no features']
  if case == 'video_not_in_gt':
    with open(os.path.join(raw, 'split_train.txt'), 'a', encoding='utf-8') as f:
      f.write('vid_zz\n')
    return [os.path.join(raw, 'gt.json'), "'vid_zz'", 'no entry']
  if case == 'malformed_gt_json':
    with open(os.path.join(raw, 'gt.json'), 'r+', encoding='utf-8') as f:
      f.truncate(50)
    return [os.path.join(raw, 'gt.json'), 'malformed JSON']
  if case == 'gt_segment_not_a_number':
    gt = _um_gt(raw)
    gt['database']['vid_a']['annotations'][0]['segment'] = ['1.0', 'end']
    _write_gt(raw, gt)
    return [os.path.join(raw, 'gt.json'), "'vid_a'", "'end' is not a number"]
  if case == 'gt_without_database':
    _write_gt(raw, {'videos': {}})
    return [os.path.join(raw, 'gt.json'), 'no "database"']
  if case == 'reversed_segment':
    gt = _um_gt(raw)
    gt['database']['vid_c']['annotations'][0]['segment'] = ['11.0', '4.0']
    _write_gt(raw, gt)
    return [os.path.join(raw, 'gt.json'), "'vid_c'", 'reversed']
  if case == 'negative_segment':
    gt = _um_gt(raw)
    gt['database']['vid_b']['annotations'][0]['segment'] = ['-1.0', '2.0']
    _write_gt(raw, gt)
    return [os.path.join(raw, 'gt.json'), "'vid_b'", 'negative']
  if case == 'missing_split_file':
    os.remove(os.path.join(raw, 'split_test.txt'))
    return [os.path.join(raw, 'split_test.txt'), 'missing split file']
  raise ValueError(case)


UM_CASES = ['missing_feature_file', 'corrupt_npy', 'not_npy', 'wrong_width',
            'rgb_flow_length_mismatch', 'nan', 'inf', 'zero_length', 'unknown_label',
            'video_without_features', 'video_not_in_gt', 'malformed_gt_json',
            'gt_segment_not_a_number', 'gt_without_database', 'reversed_segment',
            'negative_segment', 'missing_split_file']


@pytest.fixture(scope='module')
def um_template(tmp_path_factory):
  return mini_dump(tmp_path_factory.mktemp('um_template'), 'um')


@pytest.fixture(scope='module')
def wtalc_template(tmp_path_factory):
  return mini_dump(tmp_path_factory.mktemp('wtalc_template'), 'wtalc')


@pytest.mark.parametrize('case', UM_CASES)
def test_bad_um_input_fails_cleanly(tmp_path, capsys, um_template, case):
  raw = str(tmp_path / 'raw')
  shutil.copytree(um_template, raw)
  needles = _break_um(raw, case)
  data_dir = str(tmp_path / 'data')
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', raw,
                           '--data_dir', data_dir], capsys)
  assert_clean_failure(code, err, data_dir, *needles)


# ---------------------------------------------------------------------------- bad input: W-TALC


def _break_wtalc(raw, case):
  dump_path = os.path.join(raw, 'Synthetic-I3D-JOINTFeatures.npy')
  ann = os.path.join(raw, 'Synthetic-Annotations')

  def rewrite_dump(edit):
    dump = np.load(dump_path, allow_pickle=True)
    dump = edit(dump)
    np.save(dump_path, dump, allow_pickle=True)

  def set_row(i, x):
    def edit(dump):
      dump[i] = x
      return dump
    rewrite_dump(edit)

  if case == 'missing_feature_file':
    os.remove(dump_path)
    return [dump_path, 'missing feature file']
  if case == 'corrupt_npy':
    with open(dump_path, 'r+b') as f:
      f.truncate(os.path.getsize(dump_path) // 2)
    return [dump_path, 'unreadable']
  if case == 'wrong_width':
    set_row(1, np.ones((10, 1024), np.float32))
    return [dump_path, "'vid_b'", 'width 1024, expected 2048']
  if case == 'nan':
    set_row(3, np.full((12, 2048), np.nan, np.float32))
    return [dump_path, "'vid_d'", 'NaN']
  if case == 'inf':
    x = np.ones((12, 2048), np.float32)
    x[4, 4] = np.inf
    set_row(0, x)
    return [dump_path, "'vid_a'", 'Inf', 'snippet 4']
  if case == 'zero_length':
    set_row(4, np.zeros((0, 2048), np.float32))
    return [dump_path, "'vid_e'", 'zero-length']
  if case == 'video_without_features':
    rewrite_dump(lambda dump: dump[:4])
    return [dump_path, "'vid_e'", 'no features', 'holds 4 arrays']
  if case == 'unknown_label':
    labels = np.load(os.path.join(ann, 'labels.npy'), allow_pickle=True)
    labels[2] = ['Swim']
    np.save(os.path.join(ann, 'labels.npy'), labels, allow_pickle=True)
    return [os.path.join(ann, 'labels.npy'), "'vid_c'", "label 'Swim'", 'classlist.npy']
  if case == 'missing_annotation_file':
    os.remove(os.path.join(ann, 'segments.npy'))
    return [os.path.join(ann, 'segments.npy'), 'missing annotation file']
  if case == 'annotation_length_mismatch':
    np.save(os.path.join(ann, 'subset.npy'), np.array([b'validation'] * 3))
    return [os.path.join(ann, 'subset.npy'), '3 entries', '5 videos']
  if case == 'corrupt_annotation':
    with open(os.path.join(ann, 'labels.npy'), 'wb') as f:
      f.write(b'\x93NUMPY garbage')
    return [os.path.join(ann, 'labels.npy'), 'unreadable']
  raise ValueError(case)


WTALC_CASES = ['missing_feature_file', 'corrupt_npy', 'wrong_width', 'nan', 'inf', 'zero_length',
               'video_without_features', 'unknown_label', 'missing_annotation_file',
               'annotation_length_mismatch', 'corrupt_annotation']


@pytest.mark.parametrize('case', WTALC_CASES)
def test_bad_wtalc_input_fails_cleanly(tmp_path, capsys, wtalc_template, case):
  raw = str(tmp_path / 'raw')
  shutil.copytree(wtalc_template, raw)
  needles = _break_wtalc(raw, case)
  data_dir = str(tmp_path / 'data')
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', raw,
                           '--data_dir', data_dir], capsys)
  assert_clean_failure(code, err, data_dir, *needles)


def test_no_layout_or_both_layouts(tmp_path, capsys, um_template):
  data_dir = str(tmp_path / 'data')
  empty = tmp_path / 'empty'
  empty.mkdir()
  code, _, err = run_main(['--dataset', 'thumos14', '--manual_dir', str(empty),
                           '--data_dir', data_dir], capsys)
  assert_clean_failure(code, err, data_dir, str(empty), 'no UM layout')
  code, _, err = run_main(['--dataset', 'thumos14', '--manual_dir', str(tmp_path / 'absent'),
                           '--data_dir', data_dir], capsys)
  assert_clean_failure(code, err, data_dir, 'absent', 'does not exist')
  both = str(tmp_path / 'both')
  shutil.copytree(um_template, both)
  os.mkdir(os.path.join(both, 'Thumos14reduced-Annotations'))
  code, _, err = run_main(['--dataset', 'thumos14', '--manual_dir', both,
                           '--data_dir', data_dir], capsys)
  assert_clean_failure(code, err, data_dir, both, '--layout')


def test_forced_layout_reads_that_layout(tmp_path, capsys, um_template):
  data_dir = str(tmp_path / 'data')
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', um_template,
                           '--data_dir', data_dir, '--layout', 'wtalc'], capsys)
  assert_clean_failure(code, err, data_dir, um_template, 'Annotations')
  code, _, err = run_main(['--dataset', 'synthetic', '--manual_dir', um_template,
                           '--data_dir', data_dir, '--layout', 'um'], capsys)
  assert code == 0, err


# ---------------------------------------------------------------------------- real annotations


def _subsample_wtalc(src_dir, dst_dir, per_subset):
  """The first `per_subset` videos of each subset of a real W-TALC annotation dir: a smaller
  but complete (consistent) dataset."""
  os.makedirs(dst_dir)
  subset = np.load(os.path.join(src_dir, 'subset.npy'), allow_pickle=True)
  keep = np.concatenate([np.flatnonzero(subset == s)[:per_subset] for s in np.unique(subset)])
  keep.sort()
  n = len(subset)
  for f in os.listdir(src_dir):
    path = os.path.join(src_dir, f)
    if not f.endswith('.npy'):
      continue
    a = np.load(path, allow_pickle=True)
    if a.shape[:1] == (n,):
      a = a[keep]
    np.save(os.path.join(dst_dir, f), a, allow_pickle=True)
  return keep


@pytest.mark.parametrize('name,dataset', [
    ('activitynet12_wtalc/ActivityNet1.2-Annotations', 'activitynet12'),
    ('activitynet13/ActivityNet1.3-Annotations', 'activitynet13')])
@pytest.mark.parametrize('layout', layouts.LAYOUTS)
def test_activitynet_subsets_build_from_either_layout(tmp_path, name, dataset, layout):
  src = os.path.join(SHARED, name)
  ann = str(tmp_path / 'src' / os.path.basename(name))
  keep = _subsample_wtalc(src, ann, per_subset=6)
  raw = synthetic.generate(str(tmp_path / 'raw'), layout, 'activitynet', annotations=ann)
  path = build.build(dataset, raw, str(tmp_path / 'data'))
  assert path.endswith(os.path.join(dataset, data.VERSION))

  load = lambda f: np.load(os.path.join(src, f), allow_pickle=True)
  to_str = lambda x: x.decode() if isinstance(x, bytes) else str(x)
  names = [to_str(v) for v in load('videoname.npy')[keep]]
  subsets = [to_str(v) for v in load('subset.npy')[keep]]
  segments, labels = load('segments.npy')[keep], load('labels.npy')[keep]
  durations = load('duration.npy').reshape(-1)[keep]
  classlist = [to_str(c) for c in load('classlist.npy')]
  for split, subset in (('train', 'training'), ('test', 'validation')):
    ds = data.load_split(str(tmp_path / 'data'), dataset, split)
    rows = [i for i, s in enumerate(subsets) if s == subset]
    assert ds.video_ids == [names[i] for i in rows] and len(rows) == 6
    assert ds.class_names == classlist and ds.subset_name == subset
    for k, i in enumerate(rows):
      r = ds[k]
      np.testing.assert_array_equal(r['segments'],
                                    np.asarray(segments[i], np.float32).reshape(-1, 2))
      assert [classlist[c] for c in r['segment_labels']] == [to_str(l) for l in labels[i]]
      assert r['duration'] == np.float32(durations[i])
      assert r['num_snippets'] == max(1, round(durations[i] * 25 / 16))


def _independent_thumos_um():
  """{split: {vid: (duration, sorted [(s, e, label)])}} from the UM files, with plain json."""
  with open(os.path.join(TH_UM, 'gt.json'), encoding='utf-8') as f:
    gt = json.load(f)['database']
  with open(os.path.join(TH_UM, 'durations.json'), encoding='utf-8') as f:
    durations = json.load(f)
  out = {}
  for split in ('train', 'test'):
    with open(os.path.join(TH_UM, f'split_{split}.txt'), encoding='utf-8') as f:
      ids = f.read().split()
    out[split] = {v: (durations[v]['duration'],
                      [(float(a['segment'][0]), float(a['segment'][1]), a['label'])
                       for a in gt[v]['annotations']]) for v in ids}
  return out


def _independent_thumos_wtalc():
  load = lambda f: np.load(os.path.join(TH_WTALC, f), allow_pickle=True)
  names = [v.decode() for v in load('videoname.npy')]
  subset = [s.decode() for s in load('subset.npy')]
  segments, labels, duration = load('segments.npy'), load('labels.npy'), load('duration.npy')
  out = {'train': {}, 'test': {}}
  for i, v in enumerate(names):
    split = {'validation': 'train', 'test': 'test'}[subset[i]]
    out[split][v] = (float(duration[i, 0]),
                     [(float(s), float(e), l) for (s, e), l in zip(segments[i], labels[i])])
  return out


def _check_against(ds, expected, class_names):
  assert ds.video_ids == list(expected)
  assert ds.class_names == class_names
  num_segments = 0
  for i, (vid, (duration, anns)) in enumerate(expected.items()):
    r = ds[i]
    assert r['video_id'] == vid
    assert r['duration'] == np.float32(duration)
    assert r['num_snippets'] == round(duration * 25 / 16) == r['features'].shape[0]
    got = [(float(s), float(e), class_names[c])
           for (s, e), c in zip(r['segments'], r['segment_labels'])]
    want = [(float(np.float32(s)), float(np.float32(e)), l) for s, e, l in anns]
    assert got == want, vid  # same order, nothing dropped or clipped
    labels = np.zeros(len(class_names), np.float32)
    labels[[class_names.index(l) for _, _, l in anns]] = 1
    np.testing.assert_array_equal(r['labels'], labels)
    num_segments += len(anns)
  return num_segments


@pytest.mark.slow
def test_real_thumos14_annotations_in_both_layouts(tmp_path):
  """THUMOS14 from the real UM files (200 / 210 videos) and the real W-TALC files (200 / 212)
  with synthetic features; the 410 videos the two share come out identical."""
  with open(os.path.join(TH_UM, 'classlist.txt'), encoding='utf-8') as f:
    class_names = f.read().split()
  assert len(class_names) == 20
  features = {}
  counts = {}
  for layout, source, expected in (
      ('um', os.path.join(TH_UM, 'gt.json'), _independent_thumos_um()),
      ('wtalc', TH_WTALC, _independent_thumos_wtalc())):
    raw = synthetic.generate(str(tmp_path / f'raw_{layout}'), layout, 'thumos',
                             annotations=source)
    data_dir = str(tmp_path / f'data_{layout}')
    build.build('thumos14', raw, data_dir, layout=layout)
    shutil.rmtree(raw)  # 1 GB each: keep the disk footprint of the test down
    for split in ('train', 'test'):
      ds = data.load_split(data_dir, 'thumos14', split)
      counts[layout, split] = (len(ds), _check_against(ds, expected[split], class_names))
      if split == 'test':  # a sample of shared videos, compared across layouts below
        for vid in ('video_test_0000004', 'video_test_0000045', 'video_test_0001558'):
          features[layout, vid] = np.array(ds[ds.video_ids.index(vid)]['features'])
    shutil.rmtree(data_dir)  # ~0.8 GB: not left to pytest's tmp retention
  assert counts == {('um', 'train'): (200, 3007), ('um', 'test'): (210, 3311),
                    ('wtalc', 'train'): (200, 3007), ('wtalc', 'test'): (212, 3358)}
  for vid in ('video_test_0000004', 'video_test_0000045', 'video_test_0001558'):
    np.testing.assert_array_equal(features['um', vid], features['wtalc', vid])


def test_activitynet13_gt_rebuilt_from_bsn_builds_and_matches_wtalc(tmp_path, capsys):
  from data_prep import anet13_gt  # pylint: disable=g-import-not-at-top
  bsn = os.path.join(SHARED, 'activitynet13', 'bsn')
  raw = tmp_path / 'raw_gt'
  assert anet13_gt.main(['--bsn_dir', bsn, '--out_dir', str(raw), '--splits_dir',
                         os.path.join(SHARED, 'activitynet13', 'acmnet_splits')]) == 0
  out = capsys.readouterr().out
  assert 'split_train.txt: dropped 13 ids' in out and 'split_test.txt: dropped 8 ids' in out
  um = layouts.UmDataset(str(raw))
  assert {s: len(v) for s, v in um.splits.items()} == {'train': 9019, 'test': 4419}
  wtalc = layouts.WtalcDataset(os.path.join(SHARED, 'activitynet13'), name='ActivityNet1.3')
  assert um.class_names == wtalc.class_names and len(um.class_names) == 200

  # A small consistent UM dump of it: the first videos of each split, synthetic features.
  for split, n in (('train', 4), ('test', 3)):
    path = raw / f'split_{split}.txt'
    path.write_text(''.join(line + '\n' for line in path.read_text().split()[:n]))
  dump = synthetic.generate(str(tmp_path / 'raw'), 'um', 'activitynet',
                            annotations=str(raw / 'gt.json'))
  build.build('activitynet13', dump, str(tmp_path / 'data'))
  rows = {v.video_id: v for v in wtalc.rows}
  for split, n in (('train', 4), ('test', 3)):
    ds = data.load_split(str(tmp_path / 'data'), 'activitynet13', split)
    assert len(ds) == n and ds.class_names == wtalc.class_names
    for i, vid in enumerate(ds.video_ids):
      ref = rows[vid[len('v_'):]]  # the W-TALC fork drops the v_ prefix
      assert ref.split == split
      r = ds[i]
      np.testing.assert_array_equal(r['segments'], ref.segments.astype(np.float32))
      assert [ds.class_names[c] for c in r['segment_labels']] == ref.labels
      assert r['duration'] == np.float32(ref.duration)
