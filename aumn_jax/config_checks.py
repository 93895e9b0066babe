"""Checks of a config before anything runs: against the code, and against a workdir's run.

`validate_config` catches the values that would otherwise fail deep inside jit (or at the
first evaluation) with a traceback; `check_workdir` refuses a workdir that cannot be created;
`check_same_run` refuses to resume a run with a changed training setting (MAY_CHANGE lists what
may change). All raise errors.TrainingError: one line naming the key or path.
"""
import json
import os
from typing import Any

import jax
import ml_collections

from aumn_jax import data
from aumn_jax import errors
from aumn_jax import evaluation
from aumn_jax import input_pipeline
from aumn_jax import localization
from aumn_jax import losses
from aumn_jax import models
from aumn_jax import parallel

HEADS = ('aumn', 'mil')
SAMPLINGS = ('random_crop', 'uniform')


def validate_config(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Catches the config values that would otherwise fail deep inside jit with a traceback."""
  checks = [
      (config.model.head in HEADS, f'config.model.head={config.model.head!r}: not one of {HEADS}'),
      (config.data.sampling in SAMPLINGS,
       f'config.data.sampling={config.data.sampling!r}: not one of {SAMPLINGS}'),
      (config.data.dataset in data.DATASETS,
       f'config.data.dataset={config.data.dataset!r}: not one of {data.DATASETS}'),
      (isinstance(config.num_seeds, int) and config.num_seeds > 0,
       f'config.num_seeds={config.num_seeds!r}: must be an integer > 0'),
      (config.seed >= 0, f'config.seed={config.seed}: must be >= 0'),
      (config.data.synthetic_seed >= 0,
       f'config.data.synthetic_seed={config.data.synthetic_seed}: must be >= 0'),
      (config.batch_size > 0, f'config.batch_size={config.batch_size}: must be > 0'),
      (config.data.eval_batch_size > 0,
       f'config.data.eval_batch_size={config.data.eval_batch_size}: must be > 0'),
      (config.num_train_steps >= 0, 'config.num_train_steps must be >= 0'),
      (config.data.max_snippets > 0, 'config.data.max_snippets must be > 0'),
      (min(config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps) > 0,
       'config.{log,eval,checkpoint}_every_steps must be > 0'),
      (config.model.tau > 0 and config.model.tau_u > 0, 'config.model.tau/tau_u must be > 0'),
      (0.0 <= config.model.dropout < 1.0, 'config.model.dropout must be in [0, 1)'),
      (config.loss.guide_classes in losses.GUIDE_CLASSES,
       f'config.loss.guide_classes={config.loss.guide_classes!r}: not one of '
       f'{losses.GUIDE_CLASSES}'),
      (config.loss.guide_form in losses.GUIDE_FORMS,
       f'config.loss.guide_form={config.loss.guide_form!r}: not one of {losses.GUIDE_FORMS}'),
      (config.loss.guide_steps >= 0, 'config.loss.guide_steps must be >= 0'),
      (config.loss.guide_center_steps >= 0, 'config.loss.guide_center_steps must be >= 0'),
      (config.optim.cosine_steps >= 0, 'config.optim.cosine_steps must be >= 0'),
      (config.compute_dtype in models.COMPUTE_DTYPES,
       f'config.compute_dtype={config.compute_dtype!r}: not one of {models.COMPUTE_DTYPES}'),
      (len(config.profile_steps) == 2 and 0 <= config.profile_steps[0] <= config.profile_steps[1],
       f'config.profile_steps={tuple(config.profile_steps)!r}: expected (start, end) with '
       '0 <= start <= end'),
  ]
  for key, known in (('input_norm', models.INPUT_NORMS), ('fg_input', models.FG_INPUTS),
                     ('fg_norm', models.FG_NORMS), ('unit_init', models.UNIT_INITS),
                     ('suppress', models.SUPPRESS_FORMS)):
    value = config.model[key]
    checks.append((value in known, f'config.model.{key}={value!r}: not one of {known}'))
  for ok, message in checks:
    if not ok:
      raise errors.TrainingError(message)
  for what in ('batch_size', 'data.eval_batch_size'):
    value = config.batch_size if what == 'batch_size' else config.data.eval_batch_size
    try:
      parallel.check_batch_size(value, mesh, what)
    except ValueError as e:
      raise errors.TrainingError(str(e)) from None
  # Settings first used at the first evaluation: checked now, not eval_every_steps later.
  try:
    localization.check_config(config.localization)
    input_pipeline.check_buckets(config.data.eval_buckets)
    evaluation.check_thresholds(config.evaluation.tiou_thresholds)
  except ValueError as e:  # formats.InputError is a ValueError
    raise errors.TrainingError(f'config: {e}') from None


def check_workdir(workdir: str) -> None:
  """One line when `workdir` cannot hold a run (it or an ancestor is a file, not writable).

  Creates nothing: called before any dataset is generated or anything is written.
  """
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.TrainingError(f'{path}: the workdir is a file, not a directory')
  ancestor = path
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise errors.TrainingError(f'{path}: cannot create the workdir: {ancestor} is a file')
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise errors.TrainingError(f'{path}: cannot create the workdir: {ancestor} is not writable')


# What a resumed or re-evaluated run may change: none of it changes what is trained. A key
# ending in '.' covers its whole group.
MAY_CHANGE = ('num_train_steps', 'log_every_steps', 'eval_every_steps', 'checkpoint_every_steps',
              'profile_steps', 'data.data_dir', 'data.eval_batch_size', 'data.eval_buckets',
              'localization.', 'evaluation.')
# Training settings added after runs existed, with the value that reproduces what the code did
# before them: a run recorded without the key was trained with that value.
ADDED_LATER = {'model.unit_init': 'lecun', 'model.shared_classifier': False,
               'loss.guide_center': False, 'compute_dtype': 'float32', 'num_seeds': 1,
               'model.suppress': 'features', 'loss.guide_center_steps': 0,
               'model.unit_context': False, 'optim.cosine_steps': 0}


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def _may_change(key: str) -> bool:
  return any(key == k or (k.endswith('.') and key.startswith(k)) for k in MAY_CHANGE)


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, list[Any]]:
  """Compares `config` with the run's W/config.json (written when the run started).

  Returns:
    {key: [the run's value, this config's]} for every setting that differs and may differ
    (MAY_CHANGE; a key the run's record does not have, from a newer version of the code, too);
    {} for a new workdir.

  Raises:
    errors.TrainingError: one line naming every other changed key, or a damaged record.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding='utf-8') as f:
      saved = _flatten(json.load(f))
    saved = {**ADDED_LATER, **saved}
  except (OSError, ValueError, AttributeError) as e:
    raise errors.TrainingError(
        f'{path}: damaged, cannot read the config this run was started with ({e}); if you are '
        'sure this config is the run\'s, delete the file and rerun (the checkpoints are kept)'
    ) from None
  current = _flatten(json.loads(config.to_json_best_effort()))
  changed = {k: [saved.get(k), current.get(k)] for k in sorted(set(saved) | set(current))
             if saved.get(k) != current.get(k)}
  refused = [k for k in changed if k in saved and k in current and not _may_change(k)]
  if refused:
    what = ', '.join(f'{k}={changed[k][0]!r} -> {changed[k][1]!r}' for k in refused)
    raise errors.TrainingError(
        f'{path}: this config changes {what} of the run in this workdir; only the number of '
        'steps, the log/eval/checkpoint cadence and the localization/evaluation settings may '
        'change: use the run\'s config and overrides, or a new --workdir')
  return changed
