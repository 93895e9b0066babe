"""Devices, mesh and shardings: the only module that knows how the batch is split.

The mesh has two axes, `seed` x `data`. Independent training runs (config.num_seeds; the
state carries a leading seed axis, train_step.py vmaps the step over it) are spread over
`seed`; data parallelism is `jax.jit` with `NamedSharding` over `data` (SPEC §8): each seed's
state is replicated over `data`, its batch is sharded along `data`, and XLA inserts the
gradient all-reduce that `pmap` + `lax.pmean` would have written by hand. Batch sums inside
the step (the loss means, the memory-bank update) are therefore already global, which is
what makes 8 devices == 1 device and keeps every device's memory bank identical.

Seeds beyond the `seed` axis are vmapped on each device: the `seed` axis is
gcd(num_seeds, local devices), so any number of seeds runs on any device count (4 seeds on 8
devices: 4 x 2; 3 seeds on 8: 1 x 8, all three vmapped on every device).

Multi-host: every process builds the same mesh over all devices; the `seed` axis stays inside
each process and `data` spans the processes, so each process feeds, for every seed, only its
own rows of the global batch (`to_global`). Nothing here reads the config; the only file
touched is the compilation cache's directory (`enable_compilation_cache`).
"""
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from aumn_jax import errors


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run when the environment describes one.

  `jax.distributed.initialize()` auto-detects TPU VMs, SLURM and Open MPI; a manual cluster
  (e.g. two processes on 127.0.0.1 in tests) sets AUMN_COORDINATOR, AUMN_NUM_PROCESSES and
  AUMN_PROCESS_ID. A single plain process does nothing.
  """
  if 'AUMN_COORDINATOR' in os.environ:
    jax.distributed.initialize(
        coordinator_address=os.environ['AUMN_COORDINATOR'],
        num_processes=int(os.environ['AUMN_NUM_PROCESSES']),
        process_id=int(os.environ['AUMN_PROCESS_ID']))
    return

  def tasks(name):
    try:
      return int(os.environ.get(name, '1'))
    except ValueError:
      return 1

  # A one-task SLURM / MPI job is a plain process; more tasks ask for a multi-process run.
  cluster = [k for k in ('TPU_WORKER_HOSTNAMES',) if k in os.environ] + [
      k for k in ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE') if tasks(k) > 1]
  if cluster:
    try:
      jax.distributed.initialize()  # JAX's own detection of the cluster's coordinator
    except (ValueError, RuntimeError) as e:
      detail = ' '.join(str(e).split())
      raise errors.TrainingError(
          f'{", ".join(f"{k}={os.environ[k]}" for k in cluster)} asks for a multi-process '
          f'run, but JAX could not start it ({detail}); run under srun / mpirun / a TPU VM, '
          'or set AUMN_COORDINATOR, AUMN_NUM_PROCESSES and AUMN_PROCESS_ID') from None


def enable_compilation_cache(cache_dir: str, log=print) -> None:
  """JAX's persistent compilation cache in `cache_dir` ('' leaves it off; a directory the user
  set through JAX_COMPILATION_CACHE_DIR wins): a resumed run, a rerun and evaluate.py load the
  compiled steps instead of compiling them again. A directory that cannot be created is one
  line, and the run goes on without the cache."""
  if not cache_dir or jax.config.jax_compilation_cache_dir:
    return
  path = os.path.expanduser(cache_dir)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    log(f'warning: compilation cache {path}: {e.strerror}; compiling without it')
    return
  jax.config.update('jax_compilation_cache_dir', path)


def make_mesh(devices: Sequence[jax.Device] | None = None,
              num_seeds: int = 1) -> jax.sharding.Mesh:
  """A `seed` x `data` mesh over `devices` (default: every device of every process).

  The `seed` axis is gcd(num_seeds, devices per process) and lies inside each process; `data`
  takes the rest of each process's devices, process after process.
  """
  # Auto axes: jit's in/out shardings drive XLA's propagation. The (newer) Explicit default
  # makes linen Dropout raise a ShardingTypeError on batch-sharded inputs.
  devices = jax.devices() if devices is None else list(devices)
  by_process: dict[int, list[jax.Device]] = {}
  for device in devices:
    by_process.setdefault(device.process_index, []).append(device)
  per_process = {len(d) for d in by_process.values()}
  if len(per_process) != 1:
    raise ValueError(f'every process needs the same number of devices, got '
                     f'{ {p: len(d) for p, d in sorted(by_process.items())} }')
  seed_axis = math.gcd(num_seeds, per_process.pop())
  grid = np.concatenate([np.asarray(d).reshape(seed_axis, -1)
                         for _, d in sorted(by_process.items())], axis=1)
  return jax.sharding.Mesh(grid, ('seed', 'data'),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[B, ...] split over `data`, the same on every `seed` row (evaluation inputs)."""
  return NamedSharding(mesh, P('data'))


def seed_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[N, ...] split over `seed` (the train state, the rngs, per-seed metrics)."""
  return NamedSharding(mesh, P('seed'))


def seed_batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """[N, B, ...]: seeds over `seed`, each seed's batch over `data` (training inputs)."""
  return NamedSharding(mesh, P('seed', 'data'))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh,
                     what: str = 'batch_size') -> None:
  """Each seed's global batch must split evenly over the `data` axis (and so over processes)."""
  if global_batch_size % mesh.shape['data']:
    raise ValueError(
        f'config.{what}={global_batch_size} is not divisible by the '
        f'{mesh.shape["data"]} devices of the data axis of this run')


def to_global(host_batch: Any, sharding: NamedSharding) -> Any:
  """This process's NumPy rows -> global jax.Arrays with `sharding` (batch_sharded for
  [B_local, ...] rows, seed_batch_sharded for [N, B_local, ...])."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def to_host(tree: Any) -> Any:
  """Global (possibly multi-host) arrays -> full NumPy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
