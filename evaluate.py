r"""Scores localization: a trained run's checkpoint, or an exported proposals file (SPEC.md §7).

  python evaluate.py --config=configs/thumos.py --workdir=W [--step N | --best]
      restores the latest checkpoint of W (or step N, or the best-by-test one, labelled
      optimistic — SPEC §7 names the best one as the default; we default to the latest because
      selecting a checkpoint by its test mAP inflates the number, which must not be the headline), localizes the eval split, writes W/eval_step_<N>/{proposals_<split>,results}.json
      and prints the table: the same numbers as the in-training evaluation of that checkpoint.
      Pass the config and --config.* overrides that train.py got.

  python evaluate.py --ground_truth GT.json --proposals P.json [--subset test] \
      [--protocol thumos14|activitynet] [--tiou 0.1,0.2,...] [--ambiguous Ambiguous_test.txt] \
      [--drop_unknown_labels] [--per_class] [--output OUT.json]

Prints the mAP table; --output writes {tiou_thresholds, map, average_map, ap_per_class,
num_ground_truth, num_predictions} (fractions) atomically, only on success. Bad input: one line
"error: FILE: where: what" on stderr and exit status 1, no traceback, nothing written.
The file path imports no JAX (aumn_jax.formats and aumn_jax.evaluation are NumPy only).
"""

from absl import app
from absl import flags
from absl import logging

from aumn_jax import cli
from aumn_jax import evaluation
from aumn_jax import formats

FLAGS = flags.FLAGS
flags.DEFINE_string('ground_truth', None, 'ActivityNet-style gt.json.')
flags.DEFINE_string('proposals', None, 'ActivityNet result JSON {"results": {video: [...]}}.')
flags.DEFINE_string('subset', 'test', 'Ground-truth subset to evaluate ("subset" field).')
flags.DEFINE_enum('protocol', 'thumos14', sorted(evaluation.PROTOCOLS),
                  'Preset: thumos14 = tIoU 0.1:0.1:0.7 with averages 0.1:0.5, 0.3:0.7, 0.1:0.7; '
                  'activitynet = 0.50:0.05:0.95 and their mean.')
flags.DEFINE_list('tiou', None, 'Comma-separated tIoU thresholds; overrides the preset\'s.')
flags.DEFINE_string('ambiguous', None,
                    'THUMOS14 Ambiguous_test.txt: drop predictions overlapping its segments '
                    '(W-TALC convention). Default: not used (ActivityNet / UM convention).')
flags.DEFINE_bool('drop_unknown_labels', False,
                  'Drop predictions whose label has no ground truth in the subset (and report '
                  'how many) instead of failing.')
flags.DEFINE_bool('per_class', False, 'Also print AP per class.')
flags.DEFINE_string('output', None, 'Write the results as JSON here.')
_CONFIG = cli.define_config_file(
    'config', 'Checkpoint mode: the training config (with the same overrides).')
flags.DEFINE_string('workdir', None, 'Checkpoint mode: the training run\'s --workdir.')
_CACHE = cli.define_compilation_cache_flag()
flags.DEFINE_integer('step', None, 'Checkpoint mode: evaluate this step (default: latest).')
flags.DEFINE_bool('best', False, 'Checkpoint mode: evaluate the best-by-test-mAP checkpoint '
                  '(optimistic: selected on the test split).')


def _thresholds(protocol: evaluation.Protocol) -> tuple[float, ...]:
  if FLAGS.tiou is None:
    return protocol.tiou_thresholds
  values = []
  for text in FLAGS.tiou:
    try:
      values.append(float(text))
    except ValueError:
      raise app.UsageError(f'--tiou: {text!r} is not a number') from None
    if not 0 < values[-1] <= 1:  # (NaN included)
      raise app.UsageError(f'--tiou: {text} is not in (0, 1]')
  if not values:
    raise app.UsageError('--tiou: no threshold given')
  return tuple(values)


def evaluate_files() -> None:
  """--ground_truth/--proposals: score an exported proposals file (NumPy only)."""
  protocol = evaluation.PROTOCOLS[FLAGS.protocol]
  thresholds = _thresholds(protocol)
  gt = formats.load_ground_truth(FLAGS.ground_truth, subset=FLAGS.subset)
  proposals = formats.load_proposals(FLAGS.proposals)
  result = evaluation.compute(gt, proposals, thresholds, ambiguous=FLAGS.ambiguous,
                              drop_unknown_labels=FLAGS.drop_unknown_labels)
  if FLAGS.output:
    formats.write_json(FLAGS.output, result.to_dict())
  print(evaluation.format_table(result, protocol=protocol, ground_truth_name=FLAGS.ground_truth,
                                proposals_name=FLAGS.proposals, per_class=FLAGS.per_class))
  if FLAGS.output:
    print(f'wrote {FLAGS.output}')


def evaluate_run() -> None:
  """--config/--workdir: restore a checkpoint, localize, export, print (imports JAX)."""
  if not flags.FLAGS['verbosity'].present:  # orbax/tfds INFO chatter; --verbosity=0 shows it
    logging.set_verbosity(logging.WARNING)
  from aumn_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.maybe_initialize_distributed()
  parallel.enable_compilation_cache(_CACHE.value)
  from aumn_jax import eval_loop  # pylint: disable=g-import-not-at-top
  # Reads the run's dataset; never generates one (train.py does that on first use).
  eval_loop.evaluate_checkpoint(_CONFIG.value, FLAGS.workdir, step=FLAGS.step, best=FLAGS.best)


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.workdir or FLAGS['config'].present:
    if not (FLAGS.workdir and FLAGS['config'].present):
      raise app.UsageError('checkpoint mode needs both --config and --workdir')
    if FLAGS.ground_truth or FLAGS.proposals:
      raise app.UsageError('use either --config/--workdir or --ground_truth/--proposals, not both')
    if FLAGS.best and FLAGS.step is not None:
      raise app.UsageError('--best and --step are exclusive')
    evaluate_run()
    return
  if not (FLAGS.ground_truth and FLAGS.proposals):
    raise app.UsageError(
        '--ground_truth and --proposals are both required (or --config and --workdir)')
  evaluate_files()


if __name__ == '__main__':
  cli.run(main)
