"""Builds a TFDS dataset from a raw feature dump, all or nothing.

  python -m data_prep.build --dataset NAME --manual_dir RAW --data_dir DATA [--layout auto]

NAME is thumos14, activitynet12, activitynet13 or synthetic; RAW holds a dump in the UM or the
W-TALC layout (auto-detected); the dataset lands in DATA/NAME/1.0.0 (array_record), which
`aumn_jax.data.load_split(DATA, NAME, split)` reads.

Holds the `build` API, `prepare_data_dir` (the entry points call it: it generates the embedded
synthetic default on first use) and the CLI. The order is what makes a failure clean: read the
annotations, check every video's features (readable, [T, 2048] or two [T, 1024] halves of
equal length, finite, T > 0), and only then write, into a temporary directory inside DATA that
is renamed into place at the end and removed on any failure. Bad input exits 1 with one line, `error: <file>: <problem>`.

Deliberately doesn't: define the synthetic generator (data_prep/synthetic.py) or the record
(data_prep/builders.py).
"""
import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from typing import Callable

from aumn_jax import data as data_lib
from aumn_jax import errors
from aumn_jax import files
from aumn_jax.data import DataError
from data_prep import layouts
from data_prep import synthetic


def build(dataset: str, manual_dir: str, data_dir: str, layout: str = 'auto',
          overwrite: bool = False, log: Callable[[str], None] | None = None) -> str:
  """Builds `dataset` from the dump in `manual_dir` into `data_dir`.

  Args:
    dataset: thumos14 | activitynet12 | activitynet13 | synthetic.
    manual_dir: the raw dump (UM or W-TALC layout).
    data_dir: TFDS data_dir; the dataset goes to data_dir/dataset/1.0.0.
    layout: 'auto', 'um' or 'wtalc'.
    overwrite: rebuild an existing dataset (else it is kept and its path returned).
    log: called with one line per stage (print for the CLI; None is silent).

  Returns:
    The path of the built dataset directory.

  Raises:
    DataError: bad input; nothing is left in data_dir.
  """
  log = log or (lambda line: None)
  if dataset not in layouts.DATASETS:
    raise DataError(dataset, f'unknown dataset; expected one of {", ".join(layouts.DATASETS)}')
  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  final = os.path.join(data_dir, dataset, data_lib.VERSION)
  if os.path.isfile(os.path.join(final, 'dataset_info.json')) and not overwrite:
    log(f'{dataset}: already built at {final} (pass --overwrite to rebuild)')
    return final

  start = time.time()
  raw = layouts.read(manual_dir, layout, layouts.WTALC_NAMES[dataset])
  counts = ', '.join(f'{s} {len(raw.splits[s])} videos ({raw.subsets[s]!r})'
                     for s in layouts.SPLITS)
  log(f'{dataset}: {raw.layout} layout at {raw.root}: {len(raw.class_names)} classes, {counts}')
  lengths = layouts.validate(raw)
  log(f'{dataset}: checked the features of {sum(map(len, lengths.values()))} videos '
      f'({time.time() - start:.1f}s)')

  # Imported late: bad input fails fast, before TFDS (and its logging) loads.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from data_prep import builders  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()

  shortfall = files.space_shortfall(  # the records hold the float32 features
      data_dir, sum(map(sum, lengths.values())) * layouts.FEATURE_DIM * 4)
  if shortfall:
    raise DataError(data_dir, f'building {dataset} {shortfall}')
  created = [d for d in (data_dir, os.path.dirname(final)) if not os.path.isdir(d)]
  os.makedirs(os.path.dirname(final), exist_ok=True)
  # Inside data_dir so the final rename stays on one filesystem (atomic).
  tmp = tempfile.mkdtemp(prefix=f'.{dataset}-building-', dir=data_dir)
  try:
    builder = builders.BUILDERS[dataset](
        data_dir=tmp, file_format='array_record', raw=raw, lengths=lengths)
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints the temporary path
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=raw.root))
    built = os.path.join(tmp, dataset, data_lib.VERSION)
    previous = None
    if os.path.exists(final):  # overwrite: swap, so a failure never loses the old dataset
      previous = os.path.join(tmp, 'previous')
      os.rename(final, previous)
    try:
      os.rename(built, final)
    except OSError:
      if previous is not None:
        os.rename(previous, final)
      raise
  except BaseException as e:
    # A disk that filled after the check: TFDS's writers raise RuntimeError around the OSError.
    why = (files.write_failure(e, tmp) if isinstance(e, (OSError, RuntimeError))
           and not isinstance(e, errors.UserError) else None)
    shutil.rmtree(tmp, ignore_errors=True)
    for d in reversed(created):
      if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
    if why:
      raise DataError(data_dir, f'writing {dataset} failed: {why}; nothing was left') from e
    raise
  shutil.rmtree(tmp, ignore_errors=True)
  size = sum(os.path.getsize(os.path.join(final, f)) for f in os.listdir(final))
  log(f'{dataset}: wrote {final} ({size / 2**20:.1f} MiB, {time.time() - start:.1f}s)')
  return final


def prepare_data_dir(data_cfg) -> str:
  """The TFDS data_dir of a config's `data` group; generates the synthetic default on first use.

  The entry points (train.py, evaluate.py, benchmarks) call this before the library sees the
  config; `aumn_jax` only ever reads a built dataset. Only `dataset='synthetic'` is generated
  (preset `synthetic_preset`, seed `synthetic_seed`): a missing real dataset is left to
  `aumn_jax.data.load_split`'s error with the build command. Generation runs under a file
  lock so that processes sharing a disk build once.
  """
  data_dir = os.path.abspath(os.path.expanduser(data_cfg.data_dir))
  if data_cfg.dataset != 'synthetic' or _is_built(data_dir, data_cfg.dataset):
    return data_dir
  if os.path.exists(data_dir) and not os.path.isdir(data_dir):
    raise DataError(data_dir, 'is a file, not a directory (config.data.data_dir)')
  created = not os.path.isdir(data_dir)
  os.makedirs(data_dir, exist_ok=True)
  try:
    with files.exclusive_lock(os.path.join(data_dir, '.build.lock'), wait=True):
      if not _is_built(data_dir, data_cfg.dataset):
        raw = os.path.join(data_dir, 'raw')
        print(f'Generating synthetic preset {data_cfg.synthetic_preset!r} '
              f'(seed {data_cfg.synthetic_seed}) into {data_dir} (first use only)', flush=True)
        try:
          synthetic.generate(raw, 'um', data_cfg.synthetic_preset, seed=data_cfg.synthetic_seed)
          build('synthetic', raw, data_dir)
        finally:
          shutil.rmtree(raw, ignore_errors=True)  # the raw dump is only the builder's input
  except BaseException:
    if created and not _is_built(data_dir, data_cfg.dataset):  # nothing left: not even the dir
      shutil.rmtree(data_dir, ignore_errors=True)
    raise
  return data_dir


def _is_built(data_dir: str, dataset: str) -> bool:
  try:
    data_lib.load_split(data_dir, dataset, 'train')
  except data_lib.DatasetNotFoundError:
    return False
  return True


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m data_prep.build', description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataset', required=True, choices=layouts.DATASETS)
  parser.add_argument('--manual_dir', required=True, help='raw dump (UM or W-TALC layout)')
  parser.add_argument('--data_dir', required=True, help='TFDS data_dir to build into')
  parser.add_argument('--layout', default='auto', choices=('auto',) + layouts.LAYOUTS)
  parser.add_argument('--overwrite', action='store_true', help='rebuild an existing dataset')
  args = parser.parse_args(argv)
  try:
    path = build(args.dataset, args.manual_dir, args.data_dir, layout=args.layout,
                 overwrite=args.overwrite, log=print)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except OSError as e:  # disk full, permissions: still one line naming the file
    print(f'error: {e.filename or args.data_dir}: {e.strerror or e}', file=sys.stderr)
    return 1
  print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
