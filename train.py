"""Trains AUMN: python train.py --config=configs/thumos.py --workdir=W [--config.KEY=VALUE ...].

Rerunning the same command resumes from W/checkpoints. See README.md.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from aumn_jax import parallel

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.',
                               required=True)
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                          lock_config=True)
flags.mark_flags_as_required(['config'])


def parse_flags(argv):
  """absl flag parsing, with config-override mistakes (a typo'd key) as one line, not a trace."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e)
    if len(message) > 1 and message[0] == message[-1] == "'":  # a repr'd KeyError inside
      message = message[1:-1]
    message = ' '.join(message.replace('\\n', ' ').replace("\\'", "'").split())
    print(f'error: bad command line: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax/tfds INFO chatter; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  parallel.maybe_initialize_distributed()
  from aumn_jax import train_loop  # pylint: disable=g-import-not-at-top
  from aumn_jax import data  # pylint: disable=g-import-not-at-top
  from aumn_jax import evaluation  # pylint: disable=g-import-not-at-top
  from data_prep import build  # pylint: disable=g-import-not-at-top
  try:
    mesh = parallel.make_mesh()
    train_loop.validate_config(_CONFIG.value, mesh)  # a bad value fails before any generation
    build.prepare_data_dir(_CONFIG.value.data)  # the synthetic default is generated on first use
    train_loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, mesh)
  except (train_loop.TrainingError, data.DataError, evaluation.InputError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
