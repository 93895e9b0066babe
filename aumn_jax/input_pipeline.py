"""Host-side input pipeline: per-video records -> fixed-shape NumPy batches.

Holds the training clip sampler (videos longer than `max_snippets` are cropped
or uniformly sampled, shorter ones padded and masked: one static shape, one
compilation), the training batch order as a pure function of (seed, step) so a
resumed run sees exactly the batches it would have seen, evaluation batches over
full-length videos padded to a few length buckets (few compilations), and a
background-thread prefetcher.

Multi-host: every process computes the same global plan and materialises only
its own rows [p*B/P, (p+1)*B/P) of each global batch; the union over processes
is the single-process batch, bit for bit.

Deliberately doesn't: import jax or know about devices (aumn_jax/parallel.py
turns this process's rows into a global array), read files (aumn_jax/data.py
does; anything with len(), __getitem__ -> record dict, .lengths and
.num_classes works here), or normalise/augment features (the I3D features are
used as they come, as in BaS-Net/UM).
"""
import itertools
import operator
import queue
import threading
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

SAMPLING_MODES = ('random_crop', 'uniform')

# First entropy word of each np.random.SeedSequence: keeps the epoch-permutation
# stream and the per-clip sampling stream disjoint. (SeedSequence zero-pads short
# entropy, so [seed, e] and [seed, e, 0] would otherwise be the same stream.)
_PERMUTATION_STREAM = 0
_SAMPLING_STREAM = 1


class Split(Protocol):
  """What the pipeline reads from a split (aumn_jax.data.VideoSplit has it)."""
  lengths: np.ndarray  # int [N] snippets per video, known without decoding
  num_classes: int

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


# ------------------------------------------------------------------ validation


def _positive_int(value, name: str) -> int:
  try:
    value = operator.index(value)
  except TypeError:
    raise TypeError(f'{name} must be an integer, got {value!r}') from None
  if value <= 0:
    raise ValueError(f'{name} must be > 0, got {value}')
  return value


def _check_sampling(sampling: str, max_snippets: int) -> int:
  if sampling not in SAMPLING_MODES:
    raise ValueError(
        f'unknown sampling {sampling!r}; expected one of {SAMPLING_MODES}')
  return _positive_int(max_snippets, 'max_snippets')


def _check_split(split: Split) -> np.ndarray:
  """Returns the split's lengths after checking the split can be batched."""
  if len(split) == 0:
    raise ValueError('empty split: no videos to batch')
  lengths = np.asarray(split.lengths)
  if lengths.shape != (len(split),):
    raise ValueError(f'split.lengths has shape {lengths.shape}, expected '
                     f'({len(split)},) (one snippet count per video)')
  if lengths.min() < 1:
    bad = np.flatnonzero(lengths < 1)[:5].tolist()
    raise ValueError(f'videos with no snippets cannot be batched: indices {bad}')
  return lengths


def _local_rows(global_batch_size: int, process_index: int,
                process_count: int) -> np.ndarray:
  """Rows [p*B/P, (p+1)*B/P) of the global batch that process p materialises."""
  global_batch_size = _positive_int(global_batch_size, 'batch size')
  process_count = _positive_int(process_count, 'process_count')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index={process_index} is not in '
                     f'[0, process_count={process_count})')
  if global_batch_size % process_count:
    raise ValueError(
        f'global batch size {global_batch_size} is not divisible by '
        f'process_count={process_count}: every process must take an equal '
        'slice of each global batch')
  local = global_batch_size // process_count
  return np.arange(process_index * local, (process_index + 1) * local)


def _check_seed(seed) -> int:
  seed = operator.index(seed)
  if seed < 0:
    raise ValueError(f'seed must be >= 0 (np.random.SeedSequence), got {seed}')
  return seed


# ------------------------------------------------------------- pure functions


def sample_indices(length: int, max_snippets: int, sampling: str,
                   rng: np.random.Generator) -> np.ndarray:
  """Sorted snippet indices of one training clip, min(length, max_snippets) long.

  Args:
    length: snippets in the video (>= 1).
    max_snippets: clip length of the training batch.
    sampling: 'random_crop' — a random contiguous window of `max_snippets`;
      'uniform' — [0, length) cut into `max_snippets` equal bins, one random
      snippet from each (BaS-Net/UM's random perturbation, with disjoint bins),
      so the clip spans the whole video at a lower snippet rate.
    rng: source of the randomness; untouched for videos that fit whole.

  Returns:
    int64 indices into the video's snippets. Videos of at most `max_snippets`
    snippets come back whole (the batch pads them and masks the padding).
  """
  max_snippets = _check_sampling(sampling, max_snippets)
  length = operator.index(length)
  if length < 1:
    raise ValueError(f'cannot sample a clip from a video of length {length}')
  if length <= max_snippets:
    return np.arange(length)
  if sampling == 'random_crop':
    start = int(rng.integers(0, length - max_snippets + 1))
    return np.arange(start, start + max_snippets)
  # Bin i is [floor(i*L/M), floor((i+1)*L/M)): non-empty since L > M.
  bounds = np.arange(max_snippets + 1) * length // max_snippets
  return bounds[:-1] + rng.integers(0, np.diff(bounds))


def pad_to(x: np.ndarray, length: int, out: np.ndarray | None = None,
           indices: np.ndarray | None = None) -> np.ndarray:
  """Zero-pads `x[indices]` (all of `x` by default) along axis 0 to `length`.

  Args:
    x: [T, ...] array.
    length: rows of the result; at least the number of rows taken from `x`.
    out: optional preallocated [length, ...] array to write into (the batch
      buffers: saves a copy of every clip); a new float32 array otherwise.
    indices: sorted rows of `x` to take; a contiguous run is copied as a slice.

  Returns:
    `out` (or the new array): the taken rows first, zeros after.
  """
  n = x.shape[0] if indices is None else len(indices)
  if n > length:
    raise ValueError(f'cannot pad {n} rows to {length}')
  if out is None:
    out = np.empty((length,) + x.shape[1:], np.float32)
  elif out.shape != (length,) + x.shape[1:]:
    raise ValueError(f'out has shape {out.shape}, expected '
                     f'{(length,) + x.shape[1:]}')
  if indices is None:
    out[:n] = x
  elif n and indices[-1] - indices[0] == n - 1:  # sorted + distinct: a slice
    out[:n] = x[indices[0]:indices[0] + n]
  elif x.dtype == out.dtype:
    np.take(x, indices, axis=0, out=out[:n])
  else:
    out[:n] = x[indices]
  out[n:] = 0
  return out


def epoch_permutation(num_videos: int, seed: int, epoch: int) -> np.ndarray:
  """The order in which epoch `epoch` visits the videos (same on every host)."""
  rng = np.random.default_rng(
      [_PERMUTATION_STREAM, _check_seed(seed), operator.index(epoch)])
  return rng.permutation(num_videos)


def global_batch_indices(num_videos: int, step: int, *, seed: int,
                         global_batch_size: int) -> np.ndarray:
  """Video indices of the global training batch of `step`.

  Global position g = step*B + row walks through epoch-wise permutations:
  epoch g // N, place g % N. A batch straddling an epoch boundary takes the
  tail of one permutation and the head of the next, so every epoch visits
  every video exactly once and the order depends on (seed, step) only.
  """
  num_videos = _positive_int(num_videos, 'num_videos')
  global_batch_size = _positive_int(global_batch_size, 'global_batch_size')
  step = operator.index(step)
  if step < 0:
    raise ValueError(f'step must be >= 0, got {step}')
  positions = step * global_batch_size + np.arange(global_batch_size)
  epochs, places = np.divmod(positions, num_videos)
  videos = np.empty(global_batch_size, np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    videos[sel] = epoch_permutation(num_videos, seed, int(epoch))[places[sel]]
  return videos


def train_batch(split: Split, step: int, *, seed: int, global_batch_size: int,
                max_snippets: int, sampling: str, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's rows of the training batch of `step`.

  A pure function of (split, seed, step, config): batch order from
  `global_batch_indices`, and row r's clip sampled with a generator seeded by
  (seed, step, r) — so process p computes rows [p*B/P, (p+1)*B/P) alone and
  the processes' rows together equal the single-process batch.

  Args:
    split: the training videos.
    step: training step (>= 0).
    seed: config.seed (>= 0).
    global_batch_size: config.batch_size, summed over processes.
    max_snippets: config.data.max_snippets.
    sampling: config.data.sampling, 'random_crop' or 'uniform'.
    process_index: jax.process_index().
    process_count: jax.process_count(); must divide global_batch_size.

  Returns:
    {'features': float32 [B_local, max_snippets, F],
     'mask': float32 [B_local, max_snippets] (1 = real snippet),
     'labels': float32 [B_local, C] (video-level multi-hot),
     'index': int32 [B_local] (video index in the split)}.
  """
  max_snippets = _check_sampling(sampling, max_snippets)
  seed = _check_seed(seed)
  lengths = _check_split(split)
  rows = _local_rows(global_batch_size, process_index, process_count)
  videos = global_batch_indices(
      len(split), step, seed=seed, global_batch_size=global_batch_size)[rows]

  features = None  # allocated once the first record tells F
  mask = np.zeros((len(rows), max_snippets), np.float32)
  labels = np.empty((len(rows), split.num_classes), np.float32)
  for r, (row, video) in enumerate(zip(rows.tolist(), videos.tolist())):
    record = split[video]
    x = _checked_features(record, video, lengths)
    if features is None:
      features = np.empty((len(rows), max_snippets, x.shape[1]), np.float32)
    rng = np.random.default_rng([_SAMPLING_STREAM, seed, step, row])
    idx = sample_indices(x.shape[0], max_snippets, sampling, rng)
    pad_to(x, max_snippets, out=features[r], indices=idx)
    mask[r, :len(idx)] = 1
    labels[r] = record['labels']
  return {'features': features, 'mask': mask, 'labels': labels,
          'index': videos.astype(np.int32)}


def _checked_features(record: dict[str, Any], video: int,
                      lengths: np.ndarray) -> np.ndarray:
  x = record['features']
  if x.ndim != 2 or x.shape[0] != lengths[video]:
    # A wrong .lengths would silently mis-bucket eval videos; fail loudly.
    raise ValueError(f'video {video}: features have shape {x.shape} but '
                     f'split.lengths says {lengths[video]} snippets')
  return x


# ---------------------------------------------------------------- evaluation


def check_buckets(buckets: Sequence[int]) -> np.ndarray:
  buckets = np.unique(np.asarray(buckets))
  if buckets.size == 0 or buckets.dtype.kind not in 'iu' or buckets[0] <= 0:
    raise ValueError(
        f'eval buckets must be a non-empty list of positive ints, got {buckets}')
  return buckets


def eval_plan(lengths: np.ndarray, *, batch_size: int,
              buckets: Sequence[int]) -> list[tuple[int, np.ndarray]]:
  """Global eval batches: [(padded length Tb, video indices int64 [batch_size])].

  Videos sorted by length (ties by index) and grouped by bucket, so each batch
  has one bucket; the last batch of a bucket is filled with -1 (padding rows),
  so there is one batch shape per bucket used. Every video appears once.
  """
  batch_size = _positive_int(batch_size, 'eval batch_size')
  buckets = check_buckets(buckets)
  lengths = np.asarray(lengths)
  order = np.argsort(lengths, kind='stable')
  sorted_lengths = lengths[order]
  # The smallest bucket that fits each video, else the next multiple of the largest (a few
  # very long videos add a few shapes instead of failing); vectorised: thousands of videos.
  i = np.searchsorted(buckets, sorted_lengths)
  padded = np.where(i < len(buckets), buckets[np.minimum(i, len(buckets) - 1)],
                    -(-sorted_lengths // buckets[-1]) * buckets[-1])
  plan = []
  for tb in np.unique(padded):  # ascending; inside a bucket, by length
    videos = order[padded == tb]
    for start in range(0, len(videos), batch_size):
      chunk = np.full(batch_size, -1, np.int64)
      part = videos[start:start + batch_size]
      chunk[:len(part)] = part
      plan.append((int(tb), chunk))
  return plan


def eval_batches(split: Split, *, batch_size: int, buckets: Sequence[int],
                 process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of each global eval batch, over full-length videos.

  Args:
    split: the evaluation videos.
    batch_size: config.data.eval_batch_size, global (summed over processes).
    buckets: config.data.eval_buckets.
    process_index: jax.process_index().
    process_count: jax.process_count(); must divide batch_size.

  Returns:
    An iterator of {'features': float32 [b, Tb, F], 'mask': float32 [b, Tb],
    'index': int32 [b] (video index in the split, -1 for padding rows)}, b = batch_size/process_count,
    in the order of `eval_plan`. Every process gets the same number of
    batches with the same shapes (padding rows included), as multi-host jit
    needs. Wrap it in Prefetcher to overlap reading with the eval step.

  Raises:
    ValueError: bad arguments, raised by the call itself, not the first next().
  """
  lengths = _check_split(split)
  rows = _local_rows(batch_size, process_index, process_count)
  plan = eval_plan(lengths, batch_size=batch_size, buckets=buckets)
  return _eval_batches(split, lengths, rows, plan)


def _eval_batches(split: Split, lengths: np.ndarray, rows: np.ndarray,
                  plan: list[tuple[int, np.ndarray]]):
  feature_dim = None
  for tb, videos in plan:
    videos = videos[rows]
    records = {}
    if feature_dim is None:
      # A process whose slice is all padding still needs F for its shapes.
      probe = int(videos[0]) if videos[0] >= 0 else int(plan[0][1][0])
      records[probe] = split[probe]
      feature_dim = _checked_features(records[probe], probe, lengths).shape[1]
    features = np.empty((len(rows), tb, feature_dim), np.float32)
    mask = np.zeros((len(rows), tb), np.float32)
    for r, video in enumerate(videos.tolist()):
      if video < 0:
        features[r] = 0
        continue
      record = records.pop(video) if video in records else split[video]
      x = _checked_features(record, video, lengths)
      pad_to(x, tb, out=features[r])
      mask[r, :x.shape[0]] = 1
    yield {'features': features, 'mask': mask,
           'index': videos.astype(np.int32)}


# ------------------------------------------------------------------ prefetch

_ITEM, _END, _ERROR = range(3)


def _produce(iterator: Iterator[Any], out: queue.Queue,
             stop: threading.Event) -> None:
  """Worker loop. Holds no reference to its Prefetcher, so that one can be
  garbage-collected (and stop this thread) when the consumer drops it."""

  def put(message) -> bool:
    while not stop.is_set():
      try:
        out.put(message, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  try:
    for item in iterator:
      if not put((_ITEM, item)):
        return
    put((_END, None))
  except BaseException as e:  # pylint: disable=broad-except
    put((_ERROR, e))  # re-raised in the consumer, traceback included
  finally:
    close = getattr(iterator, 'close', None)
    if close is not None:
      close()


class Prefetcher:
  """Runs an iterator in a daemon thread, at most `size` items ahead.

  NumPy copies and record decoding release the GIL for most of their time, so
  the next batches are assembled while the accelerator (or XLA:CPU) runs the
  current step. An exception in the worker is raised by the consumer's next().
  Close with close() or a `with` block; iterating after close() stops.
  """

  def __init__(self, iterable: Iterable[Any], size: int = 2):
    size = _positive_int(size, 'prefetch size')
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(
        target=_produce, args=(iter(iterable), self._queue, self._stop),
        name='input_pipeline_prefetch', daemon=True)
    self._thread.start()

  def __iter__(self):
    return self

  def __next__(self):
    if self._done:
      raise StopIteration
    kind, value = self._queue.get()
    if kind == _ITEM:
      return value
    self._done = True
    self._thread.join()
    if kind == _ERROR:
      raise value
    raise StopIteration

  def close(self) -> None:
    """Stops the worker after its current item and waits for it."""
    self._done = True
    self._stop.set()
    while True:  # unblock a worker waiting on a full queue
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    if self._thread is not threading.current_thread():
      self._thread.join()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def __del__(self):
    stop = getattr(self, '_stop', None)  # absent if __init__ raised
    if stop is not None:
      stop.set()


def _stack(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


class TrainIterator:
  """(step, batch) for step = start_step, start_step + 1, ... [, end_step).

  Batch s is `train_batch(split, s, ...)`, so an iterator built with
  start_step=k after a restart yields exactly the batches the uninterrupted
  run saw from step k on. With `num_seeds` = N, every value gets a leading
  seed axis: row i is the batch of seed `seed + i`, so each of N seeds trained
  as one program sees the data order of its own single-seed run. With
  prefetch > 0 the batches are assembled in a background thread (see
  Prefetcher); prefetch=0 assembles them on next(). Arguments are validated
  here, in the caller's thread.
  """

  def __init__(self, split: Split, start_step: int = 0, *, seed: int,
               global_batch_size: int, max_snippets: int, sampling: str,
               process_index: int = 0, process_count: int = 1,
               end_step: int | None = None, prefetch: int = 2,
               num_seeds: int | None = None):
    kwargs = dict(global_batch_size=global_batch_size,
                  max_snippets=max_snippets, sampling=sampling,
                  process_index=process_index, process_count=process_count)
    _check_sampling(sampling, max_snippets)
    _check_seed(seed)
    if num_seeds is not None:
      _positive_int(num_seeds, 'num_seeds')
    _check_split(split)
    _local_rows(global_batch_size, process_index, process_count)
    start_step = operator.index(start_step)
    if start_step < 0:
      raise ValueError(f'start_step must be >= 0, got {start_step}')
    if prefetch < 0:
      raise ValueError(f'prefetch must be >= 0, got {prefetch}')
    steps = (itertools.count(start_step) if end_step is None
             else range(start_step, end_step))
    if num_seeds is None:
      batches = ((s, train_batch(split, s, seed=seed, **kwargs)) for s in steps)
    else:
      batches = ((s, _stack([train_batch(split, s, seed=seed + i, **kwargs)
                             for i in range(num_seeds)])) for s in steps)
    self._batches = Prefetcher(batches, prefetch) if prefetch else batches

  def __iter__(self):
    return self

  def __next__(self) -> tuple[int, dict[str, np.ndarray]]:
    return next(self._batches)

  def close(self) -> None:
    self._batches.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
