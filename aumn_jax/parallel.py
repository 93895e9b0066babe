"""Devices, mesh and shardings: the only module that knows how the batch is split.

Data parallelism is `jax.jit` with `NamedSharding` over a 1-D `data` mesh axis (SPEC §8):
the state is replicated, the batch is sharded along its leading axis, and XLA inserts the
gradient all-reduce that `pmap` + `lax.pmean` would have written by hand. Batch sums inside
the step (the loss means, the memory-bank update) are therefore already global, which is
what makes 8 devices == 1 device and keeps every device's memory bank identical.

Multi-host: every process builds the same mesh over all devices; each feeds only its own
rows of the global batch (`to_global`). Nothing here reads the config; the only file touched
is the compilation cache's directory (`enable_compilation_cache`).
"""
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


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D `data` mesh over `devices` (default: every device of every process)."""
  # Auto axes: jit's in/out shardings drive XLA's propagation. The (newer) Explicit default
  # makes linen Dropout raise a ShardingTypeError on batch-sharded inputs.
  devices = jax.devices() if devices is None else list(devices)
  return jax.sharding.Mesh(np.asarray(devices), ('data',),
                           axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh,
                     what: str = 'batch_size') -> None:
  """Global batches must split evenly over the mesh's devices (and so over processes)."""
  if global_batch_size % mesh.size:
    raise ValueError(
        f'config.{what}={global_batch_size} is not divisible by the '
        f'{mesh.size} devices of this run')


def to_global(host_batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """This process's NumPy rows -> global jax.Arrays sharded over `data`."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def to_host(tree: Any) -> Any:
  """Global (possibly multi-host) arrays -> full NumPy arrays on every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
