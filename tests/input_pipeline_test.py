"""Tests for aumn_jax/input_pipeline.py on small in-memory splits.

Fake features encode where each value came from (channel 0 = video index,
channel 1 = snippet index), so a batch shows which snippets of which video
landed in each row. One integration test reads a split built by data_prep.
"""
import threading
import time

import numpy as np
import pytest

from aumn_jax import input_pipeline as ip

F = 4  # feature dim of the fakes
C = 3  # classes


class FakeSplit:
  """List-backed stand-in for aumn_jax.data.VideoSplit."""

  def __init__(self, lengths, fail_on=None):
    self.lengths = np.asarray(lengths, np.int64)
    self.num_classes = C
    self.fail_on = fail_on
    self.reads = 0
    self._records = []
    for v, length in enumerate(self.lengths):
      x = np.ones((length, F), np.float32)
      x[:, 0] = v
      x[:, 1] = np.arange(length)
      labels = np.zeros(C, np.float32)
      labels[v % C] = 1
      self._records.append({'video_id': f'v{v}', 'features': x, 'labels': labels})

  def __len__(self):
    return len(self._records)

  def __getitem__(self, i):
    self.reads += 1
    if not 0 <= i < len(self):  # a list would quietly accept -1
      raise IndexError(i)
    if i == self.fail_on:
      raise OSError(f'cannot read video {i}')
    return self._records[i]


LENGTHS = [5, 12, 30, 8, 1, 64, 16, 17, 40, 9, 3]  # N = 11: batches straddle epochs
TRAIN = dict(seed=7, global_batch_size=4, max_snippets=16)


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------------ sample_indices


def test_random_crop_is_a_contiguous_window_at_every_offset():
  starts = set()
  for s in range(200):
    idx = ip.sample_indices(10, 8, 'random_crop', np.random.default_rng(s))
    assert len(idx) == 8
    np.testing.assert_array_equal(np.diff(idx), 1)
    starts.add(int(idx[0]))
  assert starts == {0, 1, 2}  # every window of 8 in 10, nothing outside


@pytest.mark.parametrize('sampling', ip.SAMPLING_MODES)
def test_short_videos_come_back_whole(sampling):
  for length in (1, 5, 8):
    np.testing.assert_array_equal(
        ip.sample_indices(length, 8, sampling, np.random.default_rng(0)),
        np.arange(length))


def test_uniform_takes_one_random_snippet_per_equal_bin():
  length, m = 23, 5  # bins [0,4) [4,9) [9,13) [13,18) [18,23)
  lo = np.array([0, 4, 9, 13, 18])
  hi = np.array([4, 9, 13, 18, 23])
  seen = [set() for _ in range(m)]
  for s in range(300):
    idx = ip.sample_indices(length, m, 'uniform', np.random.default_rng(s))
    assert len(idx) == m
    assert np.all((lo <= idx) & (idx < hi))
    for i, j in enumerate(idx):
      seen[i].add(int(j))
  assert seen == [set(range(a, b)) for a, b in zip(lo, hi)]


def test_uniform_spans_a_long_video():
  idx = ip.sample_indices(3000, 750, 'uniform', np.random.default_rng(0))
  assert len(idx) == 750 and np.all(np.diff(idx) > 0)
  assert idx[0] < 4 and idx[-1] >= 2996


@pytest.mark.parametrize('kwargs, error', [
    (dict(sampling='center_crop'), ValueError),
    (dict(max_snippets=0), ValueError),
    (dict(max_snippets=-3), ValueError),
    (dict(max_snippets=7.5), TypeError),
    (dict(length=0), ValueError),
])
def test_sample_indices_rejects_bad_arguments(kwargs, error):
  args = dict(length=10, max_snippets=8, sampling='uniform',
              rng=np.random.default_rng(0))
  args.update(kwargs)
  with pytest.raises(error):
    ip.sample_indices(**args)


def test_pad_to():
  x = np.arange(6, dtype=np.float64).reshape(3, 2)
  np.testing.assert_array_equal(
      ip.pad_to(x, 5), [[0, 1], [2, 3], [4, 5], [0, 0], [0, 0]])
  assert ip.pad_to(x, 5).dtype == np.float32
  out = np.full((4, 2), 9, np.float32)
  assert ip.pad_to(x, 4, out=out, indices=np.array([0, 2])) is out
  np.testing.assert_array_equal(out, [[0, 1], [4, 5], [0, 0], [0, 0]])
  ip.pad_to(x.astype(np.float32), 4, out=out, indices=np.array([1, 2]))
  np.testing.assert_array_equal(out, [[2, 3], [4, 5], [0, 0], [0, 0]])
  with pytest.raises(ValueError):
    ip.pad_to(x, 2)
  with pytest.raises(ValueError):
    ip.pad_to(x, 4, out=np.zeros((5, 2), np.float32))


# ------------------------------------------------------------- batch order


def test_every_epoch_visits_every_video_once():
  n, b = 11, 4
  order = np.concatenate([
      ip.global_batch_indices(n, s, seed=3, global_batch_size=b)
      for s in range(3 * n)])  # 12 epochs, batches straddling their boundaries
  epochs = order.reshape(-1, n)
  for epoch in epochs:
    assert sorted(epoch) == list(range(n))
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled each epoch


def test_batch_larger_than_split_spans_several_epochs():
  videos = ip.global_batch_indices(3, 1, seed=0, global_batch_size=8)
  assert len(videos) == 8 and set(videos) == {0, 1, 2}


def test_batch_order_depends_on_seed_and_step_only():
  a = ip.global_batch_indices(100, 5, seed=1, global_batch_size=16)
  np.testing.assert_array_equal(
      a, ip.global_batch_indices(100, 5, seed=1, global_batch_size=16))
  assert not np.array_equal(
      a, ip.global_batch_indices(100, 5, seed=2, global_batch_size=16))
  assert not np.array_equal(
      a, ip.global_batch_indices(100, 4, seed=1, global_batch_size=16))


# ------------------------------------------------------------- train_batch


@pytest.mark.parametrize('sampling', ip.SAMPLING_MODES)
def test_train_batch_contents(sampling):
  split = FakeSplit(LENGTHS)
  for step in range(6):
    batch = ip.train_batch(split, step, sampling=sampling, **TRAIN)
    assert batch['features'].shape == (4, 16, F)
    assert batch['features'].dtype == np.float32
    assert batch['mask'].shape == (4, 16) and batch['mask'].dtype == np.float32
    assert batch['labels'].shape == (4, C) and batch['labels'].dtype == np.float32
    assert batch['index'].shape == (4,) and batch['index'].dtype == np.int32
    for row, v in enumerate(batch['index']):
      n = min(LENGTHS[v], 16)
      np.testing.assert_array_equal(batch['mask'][row], np.arange(16) < n)
      x = batch['features'][row]
      np.testing.assert_array_equal(x[:n, 0], v)  # all from video v
      t = x[:n, 1]
      assert np.all(np.diff(t) > 0) and t[0] >= 0 and t[-1] < LENGTHS[v]
      if sampling == 'random_crop':
        np.testing.assert_array_equal(np.diff(t), 1)
      np.testing.assert_array_equal(x[n:], 0)  # padding is zeros
      np.testing.assert_array_equal(batch['labels'][row], split[v]['labels'])


def test_train_batch_is_a_function_of_seed_and_step():
  split = FakeSplit(LENGTHS)
  kw = dict(TRAIN, sampling='uniform')
  a = ip.train_batch(split, 3, **kw)
  assert_batches_equal(a, ip.train_batch(split, 3, **kw))
  b = ip.train_batch(split, 4, **kw)
  assert not np.array_equal(a['features'], b['features'])
  c = ip.train_batch(split, 3, **dict(kw, seed=8))
  assert not np.array_equal(a['features'], c['features'])


def test_same_video_gets_different_clips_at_different_steps():
  split = FakeSplit([64])  # every row of every batch is video 0
  kw = dict(TRAIN, sampling='random_crop')
  starts = {float(ip.train_batch(split, s, **kw)['features'][r, 0, 1])
            for s in range(5) for r in range(4)}
  assert len(starts) > 5


@pytest.mark.parametrize('sampling', ip.SAMPLING_MODES)
@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_union_to_the_single_process_batch(sampling,
                                                          process_count):
  split = FakeSplit(LENGTHS)
  kw = dict(TRAIN, sampling=sampling)
  for step in (0, 2, 5):  # step 2 straddles an epoch boundary (8..11 of 11)
    whole = ip.train_batch(split, step, **kw)
    parts = [ip.train_batch(split, step, process_index=p,
                            process_count=process_count, **kw)
             for p in range(process_count)]
    for part in parts:
      assert len(part['index']) == 4 // process_count
    assert_batches_equal(
        whole, {k: np.concatenate([p[k] for p in parts]) for k in whole})


def test_each_process_reads_only_its_rows():
  split = FakeSplit(LENGTHS)
  ip.train_batch(split, 0, process_index=1, process_count=4,
                 sampling='uniform', **TRAIN)
  assert split.reads == 1


@pytest.mark.parametrize('kwargs, match', [
    (dict(process_count=3), 'not divisible by process_count=3'),
    (dict(process_index=2, process_count=2), r'process_index=2'),
    (dict(sampling='crop'), 'unknown sampling'),
    (dict(max_snippets=0), 'max_snippets'),
    (dict(global_batch_size=0), 'batch size'),
    (dict(seed=-1), 'seed'),
])
def test_train_batch_rejects_bad_config(kwargs, match):
  kw = dict(TRAIN, sampling='uniform')
  kw.update(kwargs)
  with pytest.raises(ValueError, match=match):
    ip.train_batch(FakeSplit(LENGTHS), 0, **kw)


def test_train_batch_rejects_bad_splits():
  kw = dict(TRAIN, sampling='uniform')
  with pytest.raises(ValueError, match='empty split'):
    ip.train_batch(FakeSplit([]), 0, **kw)
  with pytest.raises(ValueError, match='no snippets'):
    ip.train_batch(FakeSplit([3, 0, 4]), 0, **kw)
  wrong = FakeSplit([3, 4])
  wrong.lengths = np.array([3, 5])
  with pytest.raises(ValueError, match='split.lengths says'):
    ip.train_batch(wrong, 0, **dict(kw, global_batch_size=2))


# ---------------------------------------------------------- TrainIterator


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize('prefetch', [0, 2])
def test_resumed_iterator_sees_the_same_batches(prefetch):
  split = FakeSplit(LENGTHS)
  kw = dict(TRAIN, sampling='uniform', prefetch=prefetch)
  with ip.TrainIterator(split, 0, **kw) as it:
    uninterrupted = take(it, 7)
  with ip.TrainIterator(split, 4, **kw) as it:
    resumed = take(it, 3)
  assert [s for s, _ in uninterrupted] == list(range(7))
  assert [s for s, _ in resumed] == [4, 5, 6]
  for (_, a), (_, b) in zip(uninterrupted[4:], resumed):
    assert_batches_equal(a, b)
  for s, b in uninterrupted:
    assert_batches_equal(b, ip.train_batch(split, s, sampling='uniform', **TRAIN))


def test_iterator_stops_at_end_step():
  with ip.TrainIterator(FakeSplit(LENGTHS), 2, end_step=5, sampling='uniform',
                        **TRAIN) as it:
    assert [s for s, _ in it] == [2, 3, 4]


def test_iterator_validates_in_the_callers_thread():
  with pytest.raises(ValueError, match='unknown sampling'):
    ip.TrainIterator(FakeSplit(LENGTHS), sampling='crop', **TRAIN)
  with pytest.raises(ValueError, match='empty split'):
    ip.TrainIterator(FakeSplit([]), sampling='uniform', **TRAIN)


def test_worker_exception_is_raised_by_the_consumer():
  split = FakeSplit([4] * 8, fail_on=5)
  it = ip.TrainIterator(split, sampling='uniform', **dict(TRAIN, seed=0))
  with pytest.raises(OSError, match='cannot read video 5'):
    for _ in range(10):  # video 5 is read within the first epoch (2 batches)
      next(it)
  with pytest.raises(StopIteration):
    next(it)
  it.close()


def test_prefetcher_is_bounded_and_closes():
  produced = []

  def items():
    for i in range(1000):
      produced.append(i)
      yield i

  prefetcher = ip.Prefetcher(items(), size=2)
  assert next(prefetcher) == 0
  deadline = time.monotonic() + 5
  while len(produced) < 4 and time.monotonic() < deadline:
    time.sleep(0.01)
  time.sleep(0.05)
  # 2 queued + 1 blocked in put, after the one consumed.
  assert len(produced) == 4
  prefetcher.close()
  assert not prefetcher._thread.is_alive()
  with pytest.raises(StopIteration):
    next(prefetcher)


def test_prefetcher_thread_ends_with_its_iterable():
  before = threading.active_count()
  prefetcher = ip.Prefetcher(range(5), size=2)
  assert list(prefetcher) == [0, 1, 2, 3, 4]
  assert threading.active_count() == before
  with pytest.raises(ValueError):
    ip.Prefetcher(range(5), size=0)


# --------------------------------------------------------------- evaluation


def _bucket_length(length, buckets):
  """Reference: the smallest bucket >= length, else the next multiple of the largest."""
  fits = [b for b in sorted(buckets) if b >= length]
  return fits[0] if fits else -(-length // max(buckets)) * max(buckets)


@pytest.mark.parametrize('length, expected', [
    (1, 8), (8, 8), (9, 16), (16, 16), (17, 32), (32, 32), (33, 64), (65, 96)])
def test_bucket_length_reference(length, expected):
  assert _bucket_length(length, (16, 8, 32)) == expected
  assert ip.eval_plan([length], batch_size=1, buckets=(16, 8, 32))[0][0] == expected


def test_bad_buckets():
  for buckets in ((), (0, 8), (8.5,)):
    with pytest.raises(ValueError, match='eval buckets'):
      ip.check_buckets(buckets)


EVAL_LENGTHS = [5, 12, 30, 8, 1, 64, 16, 17, 40, 9, 3, 100, 7, 31]
EVAL = dict(batch_size=4, buckets=(8, 16, 32))


def test_eval_batches_cover_every_video_once_with_one_shape_per_bucket():
  split = FakeSplit(EVAL_LENGTHS)
  batches = list(ip.eval_batches(split, **EVAL))
  index = np.concatenate([b['index'] for b in batches])
  assert sorted(index[index >= 0]) == list(range(len(EVAL_LENGTHS)))
  shapes = {b['features'].shape for b in batches}
  # Buckets used: 8, 16, 32, and 64 and 128 for the two longer than 32.
  assert shapes == {(4, t, F) for t in (8, 16, 32, 64, 128)}
  for b in batches:
    tb = b['features'].shape[1]
    assert b['mask'].shape == (4, tb) and b['mask'].dtype == np.float32
    assert b['index'].dtype == np.int32
    for row, v in enumerate(b['index']):
      if v < 0:
        assert not b['features'][row].any() and not b['mask'][row].any()
        continue
      length = EVAL_LENGTHS[v]
      assert tb == _bucket_length(length, EVAL['buckets'])
      np.testing.assert_array_equal(b['mask'][row], np.arange(tb) < length)
      np.testing.assert_array_equal(b['features'][row, :length],
                                    split[v]['features'])  # whole video
      assert not b['features'][row, length:].any()


def test_eval_batch_count_is_minimal():
  plan = ip.eval_plan(np.array(EVAL_LENGTHS), **EVAL)
  # Videos per bucket: 8 -> 5, 16 -> 3, 32 -> 3, 64 -> 2, 128 -> 1.
  assert [tb for tb, _ in plan] == [8, 8, 16, 32, 64, 128]


@pytest.mark.parametrize('lengths', [EVAL_LENGTHS, [20, 3, 20, 20, 20]])
@pytest.mark.parametrize('process_count', [2, 4])
def test_eval_process_slices_union_to_the_single_process_batches(
    process_count, lengths):
  # [20, 3, ...]: the first batch is [1, -1, -1, -1], all padding on most
  # processes, which must still learn F for their shapes.
  split = FakeSplit(lengths)
  whole = list(ip.eval_batches(split, **EVAL))
  parts = [list(ip.eval_batches(split, process_index=p,
                                process_count=process_count, **EVAL))
           for p in range(process_count)]
  for part in parts:  # same batch count and shapes on every process
    assert [b['features'].shape for b in part] == [
        (4 // process_count,) + b['features'].shape[1:] for b in whole]
  for i, batch in enumerate(whole):
    assert_batches_equal(
        batch, {k: np.concatenate([p[i][k] for p in parts]) for k in batch})


def test_eval_batches_reject_bad_config():
  split = FakeSplit(EVAL_LENGTHS)
  # Raised by the call, before any batch is asked for.
  with pytest.raises(ValueError, match='not divisible'):
    ip.eval_batches(split, batch_size=4, buckets=(8,), process_count=3)
  with pytest.raises(ValueError, match='empty split'):
    ip.eval_batches(FakeSplit([]), **EVAL)
  with pytest.raises(ValueError, match='eval buckets'):
    ip.eval_batches(split, batch_size=4, buckets=())
  with pytest.raises(ValueError, match='no snippets'):
    ip.eval_batches(FakeSplit([3, 0]), **EVAL)


# ------------------------------------------------------- the real data path


@pytest.fixture(scope='module')
def built_tiny(tmp_path_factory):
  """The tiny synthetic preset through data_prep and aumn_jax.data (~2 s)."""
  from aumn_jax import data  # pylint: disable=g-import-not-at-top
  from data_prep import build, synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('tiny')
  raw = synthetic.generate(str(root / 'raw'), 'um', 'tiny', seed=0)
  build.build('synthetic', raw, str(root / 'data'))
  return {s: data.load_split(str(root / 'data'), 'synthetic', s)
          for s in ('train', 'test')}


@pytest.mark.parametrize('sampling', ip.SAMPLING_MODES)
def test_train_batches_from_a_built_dataset(built_tiny, sampling):
  split = built_tiny['train']
  kw = dict(seed=0, global_batch_size=8, max_snippets=128, sampling=sampling)
  assert split.lengths.min() < 128 < split.lengths.max()  # pads and samples
  batch = ip.train_batch(split, 3, **kw)
  assert batch['features'].shape == (8, 128, 2048)
  for row, v in enumerate(batch['index']):
    record = split[int(v)]
    n = min(int(split.lengths[v]), 128)
    assert batch['mask'][row].sum() == n
    np.testing.assert_array_equal(batch['labels'][row], record['labels'])
    # Every clip row is one of the video's snippets, in order, then zeros.
    where = {snippet.tobytes(): t for t, snippet in enumerate(record['features'])}
    t = np.array([where[c.tobytes()] for c in batch['features'][row, :n]])
    assert np.all(np.diff(t) > 0)
    if sampling == 'random_crop':
      np.testing.assert_array_equal(np.diff(t), 1)
    assert not batch['features'][row, n:].any()
  halves = [ip.train_batch(split, 3, process_index=p, process_count=2, **kw)
            for p in range(2)]
  assert_batches_equal(
      batch, {k: np.concatenate([h[k] for h in halves]) for k in batch})


def test_eval_batches_from_a_built_dataset(built_tiny):
  split = built_tiny['test']
  seen = []
  for batch in ip.eval_batches(split, batch_size=4, buckets=(64, 128, 256)):
    tb = batch['features'].shape[1]
    for row, v in enumerate(batch['index']):
      if v >= 0:
        seen.append(int(v))
        n = int(split.lengths[v])
        assert tb == _bucket_length(n, (64, 128, 256))
        np.testing.assert_array_equal(batch['features'][row, :n],
                                      split[int(v)]['features'])
        assert batch['mask'][row].sum() == n
  assert sorted(seen) == list(range(len(split)))
