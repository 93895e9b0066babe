r"""Times the host input pipeline (aumn_jax/input_pipeline.py) on THUMOS-size batches.

  python -m benchmarks.input_pipeline [--data_dir ~/.cache/aumn_jax] [--json OUT.json]
      [--steps 20] [--sampling random_crop,uniform] [--consumer_ms 500]

Data: the synthetic `thumos` preset (200 train / 212 test videos, 20 classes, THUMOS14-like
lengths), read through the real path (TFDS array_record -> aumn_jax.data.load_split). It is
generated and built on first use into DATA_DIR/synthetic_thumos with the recipe of
configs/synthetic.py (preset 'thumos', seed 0, UM layout), so training and this benchmark
share one build.

Rows (training: global batch 16 x 750 x 2048 float32 = 98 MB, one process):
  decode    only reading the batch's 16 records (split[i]), the floor under everything else;
  raw       train_batch(step) in the calling thread;
  prefetch  TrainIterator(prefetch=2) drained as fast as possible (worker-thread throughput);
  overlap   TrainIterator(prefetch=2) with a consumer that keeps the CPU busy --consumer_ms
            per step (NumPy matmuls standing in for the train step; BLAS may use every core,
            as XLA:CPU does): 'stall' is the mean wait in next(), the time the step would
            lose to the input pipeline;
  eval      eval_batches over the test split, config buckets (256 .. 4096), batch 8.
Each timed row skips 2 warm-up batches (page cache, allocator); batches/s over --steps.
"""
import json
import os
import time

from absl import flags
import numpy as np


from aumn_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import data  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from data_prep import build  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('data_dir', '~/.cache/aumn_jax',
                    'Cache root; the dataset lives in DATA_DIR/synthetic_thumos.')
flags.DEFINE_string('json', None, 'Write the measurements here as JSON.')
flags.DEFINE_integer('steps', 20, 'Timed batches per row (after 2 warm-up batches).',
                     lower_bound=1)
flags.DEFINE_list('sampling', list(input_pipeline.SAMPLING_MODES), 'Sampling modes to time.')
flags.DEFINE_integer('batch_size', 16, 'Global training batch (THUMOS: 16).', lower_bound=1)
flags.DEFINE_integer('max_snippets', 750, 'Training clip length (THUMOS: 750).',
                     lower_bound=1)
flags.DEFINE_integer('prefetch', 2, 'Prefetch queue size of the prefetch/overlap rows.',
                     lower_bound=1)
flags.DEFINE_float('consumer_ms', 500.0, 'Busy time per step of the overlap row; 0 skips it.',
                   lower_bound=0)

WARMUP = 2
EVAL_BUCKETS, EVAL_BATCH = (256, 512, 1024, 2048, 4096), 8  # configs/thumos.py


def prepare(cache_root: str) -> str:
  """CACHE_ROOT/synthetic_thumos: configs/synthetic.py's dataset, generated and built once."""
  data_cfg = synthetic_config.get_config().data
  data_cfg.data_dir = os.path.join(cache_root, 'synthetic_thumos')
  return build.prepare_data_dir(data_cfg)


def busy(seconds: float) -> None:
  """Keeps the CPU busy in NumPy matmuls (GIL released inside, like an XLA step)."""
  a = np.ones((256, 256), np.float32)
  end = time.perf_counter() + seconds
  while time.perf_counter() < end:
    a = a @ a
    a *= 1 / 256


def timed(make_batches, steps: int):
  """(seconds per batch, batches) over `steps` batches after WARMUP of them."""
  it = iter(make_batches())
  for _ in range(WARMUP):
    next(it)
  start = time.perf_counter()
  for _ in range(steps):
    next(it)
  elapsed = time.perf_counter() - start
  if hasattr(it, 'close'):
    it.close()
  return elapsed / steps


def train_rows(split, sampling: str):
  kw = dict(seed=0, global_batch_size=FLAGS.batch_size, max_snippets=FLAGS.max_snippets,
            sampling=sampling)
  steps = FLAGS.steps
  batch_mb = FLAGS.batch_size * FLAGS.max_snippets * 2048 * 4 / 1e6
  rows = []

  def decode():
    for s in range(WARMUP + steps):
      for v in input_pipeline.global_batch_indices(
          len(split), s, seed=0, global_batch_size=FLAGS.batch_size):
        split[int(v)]
      yield s

  def raw():
    for s in range(WARMUP + steps):
      yield input_pipeline.train_batch(split, s, **kw)

  def prefetched():
    return input_pipeline.TrainIterator(split, 0, prefetch=FLAGS.prefetch, **kw)

  for name, make in (('decode', decode), ('raw', raw), ('prefetch', prefetched)):
    sec = timed(make, steps)
    rows.append(dict(row=name, sampling=sampling, batches_per_s=1 / sec,
                     ms_per_batch=1e3 * sec,
                     mb_per_s=None if name == 'decode' else batch_mb / sec))

  if FLAGS.consumer_ms > 0:
    work = FLAGS.consumer_ms / 1e3
    with input_pipeline.TrainIterator(split, 0, prefetch=FLAGS.prefetch, **kw) as it:
      for _ in range(WARMUP):
        next(it)
        busy(work)
      stalls, start = [], time.perf_counter()
      for _ in range(steps):
        t = time.perf_counter()
        next(it)
        stalls.append(time.perf_counter() - t)
        busy(work)
      sec = (time.perf_counter() - start) / steps
    rows.append(dict(row='overlap', sampling=sampling, batches_per_s=1 / sec,
                     ms_per_batch=1e3 * sec, mb_per_s=batch_mb / sec,
                     consumer_ms=FLAGS.consumer_ms, stall_ms=1e3 * float(np.mean(stalls)),
                     max_stall_ms=1e3 * float(np.max(stalls))))
  return rows


def eval_row(split):
  plan = input_pipeline.eval_plan(split.lengths, batch_size=EVAL_BATCH, buckets=EVAL_BUCKETS)
  start = time.perf_counter()
  nbytes = 0
  for batch in input_pipeline.eval_batches(split, batch_size=EVAL_BATCH, buckets=EVAL_BUCKETS):
    nbytes += batch['features'].nbytes
  sec = time.perf_counter() - start
  return dict(row='eval', sampling='-', batches_per_s=len(plan) / sec,
              ms_per_batch=1e3 * sec / len(plan), mb_per_s=nbytes / 1e6 / sec,
              batches=len(plan), videos=len(split), seconds=sec,
              shapes=sorted({tb for tb, _ in plan}))


@cli.user_errors
def main(argv):
  del argv
  cli.check_output_paths(json=FLAGS.json)
  data_dir = prepare(FLAGS.data_dir)
  train = data.load_split(data_dir, 'synthetic', 'train')
  test = data.load_split(data_dir, 'synthetic', 'test')
  print(f'{train!r}: snippets median {int(np.median(train.lengths))}, '
        f'max {train.lengths.max()}, {np.mean(train.lengths > FLAGS.max_snippets):.0%} '
        f'> {FLAGS.max_snippets}')
  rows = []
  for sampling in FLAGS.sampling:
    rows += train_rows(train, sampling)
  rows.append(eval_row(test))

  print(f'\nbatch {FLAGS.batch_size} x {FLAGS.max_snippets} x 2048 float32, '
        f'{os.cpu_count()} CPUs, {FLAGS.steps} timed batches per row')
  print(f'{"row":<9} {"sampling":<12} {"batches/s":>9} {"ms/batch":>9} {"MB/s":>7}  note'
        '   (MB/s: batch arrays produced)')
  for r in rows:
    note = ''
    mb = '-' if r['mb_per_s'] is None else f'{r["mb_per_s"]:.0f}'
    if r['row'] == 'decode':
      note = 'split[i] of the batch\'s videos only (no batch assembly)'
    elif r['row'] == 'overlap':
      note = (f'consumer {r["consumer_ms"]:.0f} ms/step: stall {r["stall_ms"]:.1f} ms mean, '
              f'{r["max_stall_ms"]:.1f} max')
    elif r['row'] == 'eval':
      note = (f'{r["videos"]} videos in {r["batches"]} batches of {EVAL_BATCH}, '
              f'lengths {r["shapes"]}')
    print(f'{r["row"]:<9} {r["sampling"]:<12} {r["batches_per_s"]:>9.2f} '
          f'{r["ms_per_batch"]:>9.1f} {mb:>7}  {note}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'batch_size': FLAGS.batch_size, 'max_snippets': FLAGS.max_snippets,
                 'feature_dim': 2048, 'steps': FLAGS.steps, 'prefetch': FLAGS.prefetch,
                 'cpus': os.cpu_count(), 'data_dir': data_dir, 'rows': rows}, f, indent=1)
    print(f'wrote {FLAGS.json}')


if __name__ == '__main__':
  cli.run(main)
