"""Orbax checkpoints of the train state: the latest two and the best one by test mAP.

A run's position is its `state.step` alone: data order and rng are functions of (seed, step),
so restoring the latest state resumes exactly. Saves are asynchronous; a save killed midway
leaves a `*.orbax-checkpoint-tmp` folder that restore ignores and the manager cleans. A
checkpoint damaged after it was written (a truncated file) is moved to W/checkpoints_damaged/
and the run resumes from the newest one that restores: two are kept for that.
"""
import json
import os
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P
from orbax.checkpoint import checkpoint_managers

from aumn_jax import errors

BEST_METRIC = 'average_map'


# The JSON records inside a checkpoint step (a truncated one makes orbax fail on open).
_JSON_RECORDS = ('_CHECKPOINT_METADATA', os.path.join('metrics', 'metrics'),
                 os.path.join('default', '_METADATA'), os.path.join('default', '_sharding'))
DAMAGED_DIR = 'checkpoints_damaged'


def create_manager(workdir: str, *, read_only: bool = False,
                   log: Callable[[str], None] = print) -> ocp.CheckpointManager:
  """Keeps the latest two checkpoints plus the best one by `average_map` (evaluation saves).

  A step whose JSON records do not parse is moved to W/checkpoints_damaged/ first (one line
  through `log`); read-only (evaluate.py) it is an error naming it instead.
  """
  root = os.path.join(os.path.abspath(workdir), 'checkpoints')
  for step in _steps_on_disk(root):
    why = _damaged_record(os.path.join(root, step))
    if why is None:
      continue
    if read_only:
      raise errors.TrainingError(f'{root}/{step}: damaged checkpoint ({why}); rerun train.py '
                                 'on this workdir to set it aside and resume from an earlier one')
    _set_aside(root, step, why, log)
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=2),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=lambda m: m[BEST_METRIC], best_mode='max',
      cleanup_tmp_directories=True, create=not read_only, read_only=read_only)
  return ocp.CheckpointManager(root, options=options)


def _steps_on_disk(root: str) -> list[str]:
  if jax.process_index() != 0 or not os.path.isdir(root):  # process 0 tidies for everyone
    return []
  return sorted((n for n in os.listdir(root) if n.isdigit()), key=int)


def _damaged_record(step_dir: str) -> Optional[str]:
  for name in _JSON_RECORDS:
    path = os.path.join(step_dir, name)
    if not os.path.exists(path):
      continue
    try:
      with open(path, encoding='utf-8') as f:
        json.load(f)
    except (OSError, ValueError) as e:
      return f'{name}: {" ".join(str(e).split())[:120]}'
  return None


def _set_aside(root: str, step: str, why: str, log: Callable[[str], None]) -> None:
  """Moves checkpoint `step` to W/checkpoints_damaged/ (kept for a look; the rerun saves the
  step again) and says so in one line."""
  aside = os.path.join(os.path.dirname(root), DAMAGED_DIR)
  os.makedirs(aside, exist_ok=True)
  target = os.path.join(aside, step)
  if os.path.exists(target):
    target = f'{target}.{len(os.listdir(aside))}'
  os.replace(os.path.join(root, step), target)
  log(f'{root}/{step}: damaged checkpoint ({why}); moved to {target}, resuming from an '
      'earlier one')


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  """Starts an asynchronous save of `step`; a failure of the previous one raises first."""
  check_saves(manager)
  try:
    manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
  except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many types)
    raise _save_failed(manager, e) from e


def check_saves(manager: ocp.CheckpointManager) -> None:
  """Raises TrainingError if a background save has failed (does not wait for running ones).

  A full disk or a vanished directory surfaces here, on the step after the failure, not at the
  end of the run: the loop checks every log step and before each save."""
  try:
    manager.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, e) from e


def wait_for_saves(manager: ocp.CheckpointManager) -> None:
  """Blocks until the running saves are on disk; a failed one raises TrainingError."""
  try:
    manager.wait_until_finished()
    manager.check_for_errors()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(manager, e) from e


def _save_failed(manager: ocp.CheckpointManager, e: Exception) -> errors.TrainingError:
  steps = sorted(manager.all_steps())
  kept = f'the saved steps {steps} are kept' if steps else 'no checkpoint was saved yet'
  return errors.TrainingError(
      f'{manager.directory}: saving a checkpoint failed ({type(e).__name__}: '
      f'{" ".join(str(e).split())[:160]}); stopped: {kept}; fix the cause (e.g. free disk '
      'space) and rerun to resume')


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores `step` into the structure, shapes and shardings of `target` (a live state).

  A single-seed target ([1, ...] leaves) also restores a checkpoint written before states
  carried a seed axis (leaves without it), so such runs resume instead of starting over.
  """
  if _saved_without_seed_axis(manager, step, target):
    unstacked = jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape[1:], x.dtype, sharding=NamedSharding(x.sharding.mesh, P())), target)
    old = manager.restore(step, args=ocp.args.StandardRestore(unstacked))
    return jax.tree.map(lambda x, t: jax.device_put(x[None], t.sharding), old, target)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _saved_without_seed_axis(manager: ocp.CheckpointManager, step: int, target: Any) -> bool:
  """Whether checkpoint `step` holds `target`'s arrays without their leading axis of 1."""
  leaves = jax.tree.leaves(target)
  if not leaves or any(x.ndim == 0 or x.shape[0] != 1 for x in leaves):
    return False
  try:
    saved = jax.tree.leaves(manager.item_metadata(step), is_leaf=lambda x: hasattr(x, 'shape'))
  except Exception:  # pylint: disable=broad-except  (restore reports what is wrong with it)
    return False
  return (sorted(tuple(getattr(x, 'shape', ())) for x in saved)
          == sorted(tuple(x.shape[1:]) for x in leaves))


def restore_failure(e: BaseException) -> str:
  """Why a checkpoint did not restore, in one short line (orbax/tensorstore raise many types,
  some with multi-line messages)."""
  return f'{type(e).__name__}: {" ".join(str(e).split())[:120]}'


def restore_latest(manager: ocp.CheckpointManager, target: Any,
                   log: Callable[[str], None] = print) -> tuple[int, Any]:
  """(step, state) of the newest checkpoint that restores; (0, target) when there is none.

  A checkpoint that fails to restore is moved aside (W/checkpoints_damaged/) with one line
  through `log`, so a truncated latest save costs the steps since the previous one.

  Raises:
    errors.TrainingError: there were checkpoints and none of them restores.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      return step, restore(manager, step, target)
    except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many types)
      _set_aside(str(manager.directory), str(step), restore_failure(e), log)
      manager.reload()
  if steps:
    raise errors.TrainingError(
        f'{manager.directory}: none of the checkpoints {steps} restores (each is in '
        f'{DAMAGED_DIR}/ now); rerun to start over')
  return 0, target
