"""Shared test setup: 8 fake CPU devices, set before anything imports jax.

The packages (aumn_jax, data_prep, configs, benchmarks) are imported as installed
(`pip install -e .`, README); nothing here edits sys.path.
"""
import json
import os
import tempfile

if 'xla_force_host_platform_device_count' not in os.environ.get('XLA_FLAGS', ''):
  # (subprocesses of tests that chose their own device count keep it)
  os.environ['XLA_FLAGS'] = (
      os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# train.py / evaluate.py default to a persistent compilation cache in the user's home; the
# tests (and the scripts they start) keep theirs in the temp dir instead.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'aumn_jax_tests_xla_cache'))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long-running test (still run in CI)')


@pytest.fixture
def tmpfs(tmp_path):
  """mount(size) -> a fresh tmpfs of that size ('1m', '64m'): a real disk that fills (ENOSPC
  from the kernel). Skips the test where mounting is not allowed (needs root or
  CAP_SYS_ADMIN); unmounted afterwards."""
  import subprocess  # pylint: disable=g-import-not-at-top
  mounted = []

  def mount(size):
    target = tmp_path / f'tmpfs{len(mounted)}'
    target.mkdir()
    made = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(target)],
                          capture_output=True, text=True, check=False)
    if made.returncode:
      pytest.skip(f'cannot mount a tmpfs here ({made.stderr.strip()}): full-disk case untested')
    mounted.append(target)
    return target

  yield mount
  for target in mounted:
    subprocess.run(['umount', str(target)], check=True)


@pytest.fixture(scope='session')
def tiny_data_dir(tmp_path_factory):
  """The synthetic `tiny` preset, generated and built once per test session (UM layout)."""
  from data_prep import build
  from data_prep import synthetic
  root = tmp_path_factory.mktemp('tiny_synthetic')
  synthetic.generate(str(root / 'raw'), 'um', 'tiny', seed=0)
  build.build('synthetic', str(root / 'raw'), str(root / 'data'))
  return str(root / 'data')


def tiny_config(data_dir):
  """configs/synthetic.py shrunk to test size (STYLE §6): D=16, L=4, 32 snippets, batch 8."""
  from configs import synthetic
  c = synthetic.get_config()
  c.data.data_dir = data_dir
  c.data.synthetic_preset = 'tiny'
  c.data.max_snippets = 32
  c.data.eval_buckets = (64, 128, 256)
  c.data.eval_batch_size = 8
  c.model.dim = 16
  c.model.num_units = 4
  c.batch_size = 8
  # SPEC's 1e-4, not the synthetic default's 3e-4: Adam normalises each gradient, so float
  # reduction-order noise on near-zero gradients moves params by up to ~lr per step, and the
  # 8-devices == 1-device and 2-processes == 1-process checks hold to 1e-5 (not at 3e-4).
  c.optim.learning_rate = 1e-4
  c.num_train_steps = 4
  c.log_every_steps = 2
  c.eval_every_steps = 4
  c.checkpoint_every_steps = 2
  return c


def flat_outputs(out):
  """models.Outputs as one flat {name: array} dict (the PyTorch twin's and the NumPy
  references' form): the memory's fields beside the skeleton's."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  flat = {f.name: getattr(out, f.name) for f in dataclasses.fields(out) if f.name != 'memory'}
  if out.memory is not None:
    flat.update({f.name: getattr(out.memory, f.name) for f in dataclasses.fields(out.memory)})
  return flat


def outputs_from_flat(flat):
  """The inverse of flat_outputs: a flat dict with the memory's keys makes an AUMN output."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from aumn_jax import models
  memory_keys = [f.name for f in dataclasses.fields(models.MemoryOutputs)]
  memory = (models.MemoryOutputs(**{k: flat[k] for k in memory_keys})
            if 'read_attn' in flat else None)
  return models.Outputs(**{k: v for k, v in flat.items() if k not in memory_keys},
                        memory=memory)


def worker_env(devices, **extra):
  """The environment of a train.py / worker subprocess on `devices` fake CPU devices."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env.update(extra)
  return env


def checkpoint_variables(workdir, config, step=None):
  """(params and memory bank, [N]-stacked over seeds, of checkpoint `step` (default: the
  latest) of a run of `config` on the synthetic dataset, as NumPy; that step)."""
  import jax  # pylint: disable=g-import-not-at-top
  from aumn_jax import checkpointing, data, parallel, train_step
  num_classes = data.load_split(config.data.data_dir, 'synthetic', 'train').num_classes
  target = train_step.init_state(config, num_classes, parallel.make_mesh(jax.devices()[:1]))
  manager = checkpointing.create_manager(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  state = checkpointing.restore(manager, step, target)
  return jax.device_get({'params': state.params, 'memory': state.memory}), step


def assert_trees_close(a, b, atol):
  """Same structure, every leaf within atol (atol=0: equal, bitwise)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


def read_jsonl(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def pairwise_auc(scores, positive):
  """ROC AUC by its definition, independent of eval_loop.roc_auc's ranks: P(a positive scores
  above a negative) + P(tie) / 2, over every pair."""
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))
