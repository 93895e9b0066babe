"""Orbax checkpoints of the train state: the latest one and the best one by test mAP.

A run's position is its `state.step` alone: data order and rng are functions of (seed, step),
so restoring the latest state resumes exactly. Saves are asynchronous; a save killed midway
leaves a `*.orbax-checkpoint-tmp` folder that restore ignores and the manager cleans.
"""
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'average_map'


def create_manager(workdir: str, *, read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest checkpoint plus the best one by `average_map` (evaluation saves)."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=1),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], reverse=False, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policy, best_fn=lambda m: m[BEST_METRIC], best_mode='max',
      cleanup_tmp_directories=True, create=not read_only, read_only=read_only)
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict[str, float]] = None) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """Restores `step` into the structure, shapes and shardings of `target` (a live state)."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))

