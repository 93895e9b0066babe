"""Trains AUMN: python train.py --config=configs/thumos.py --workdir=W [--config.KEY=VALUE ...].

Rerunning the same command resumes from W/checkpoints. See README.md.
"""
import sys

from absl import app
from absl import flags
from absl import logging

from aumn_jax import cli
from aumn_jax import parallel

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.',
                               required=True)
_CONFIG = cli.define_config_file('config', 'Training config file.')
flags.mark_flags_as_required(['config'])
_CACHE = cli.define_compilation_cache_flag()


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax/tfds INFO chatter; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  parallel.maybe_initialize_distributed()
  parallel.enable_compilation_cache(_CACHE.value)
  from aumn_jax import config_checks  # pylint: disable=g-import-not-at-top
  from aumn_jax import train_loop  # pylint: disable=g-import-not-at-top
  from data_prep import build  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh()
  config_checks.validate_config(_CONFIG.value, mesh)  # a bad value fails before any generation
  config_checks.check_workdir(_WORKDIR.value)
  build.prepare_data_dir(_CONFIG.value.data)  # the synthetic default is generated on first use
  summary = train_loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value, mesh)
  if summary.get('signal') == 'SIGINT':
    sys.exit(130)  # interrupted (its checkpoint is saved); SIGTERM preemption exits 0


if __name__ == '__main__':
  cli.run(main)
