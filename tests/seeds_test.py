"""config.num_seeds: N seeds trained as one program are N single-seed runs.

Every run goes through train_loop.train_and_evaluate (the code `train.py` runs) on 8 fake CPU
devices (conftest), on a seed x data = 4 x 2 mesh and on one device (all four seeds vmapped).
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import conftest
from aumn_jax import checkpointing
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import parallel
from aumn_jax import train_loop
from aumn_jax import train_step

SEEDS = 4


def _config(data_dir, **changes):
  config = conftest.tiny_config(data_dir)
  config.evaluation.num_plots = 1
  for key, value in changes.items():
    config[key] = value
  return config


def _variables(workdir, config):
  return conftest.checkpoint_variables(workdir, config)[0]


def _lines(workdir):
  return conftest.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))


def _json(path):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


@pytest.fixture(scope='module')
def single_runs(tiny_data_dir, tmp_path_factory):
  """Seeds 0..3, each its own 4-step run on one device."""
  runs = []
  for seed in range(SEEDS):
    config = _config(tiny_data_dir, seed=seed)
    workdir = str(tmp_path_factory.mktemp(f'seed{seed}'))
    train_loop.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:1]))
    runs.append((config, workdir))
  return runs


@pytest.fixture(scope='module')
def four_seeds(tiny_data_dir, tmp_path_factory):
  """num_seeds=4 on all 8 devices: a 4 (seed) x 2 (data) mesh."""
  config = _config(tiny_data_dir, num_seeds=SEEDS)
  workdir = str(tmp_path_factory.mktemp('four_seeds'))
  mesh = parallel.make_mesh(num_seeds=SEEDS)
  assert dict(mesh.shape) == {'seed': 4, 'data': 2}
  summary = train_loop.train_and_evaluate(config, workdir, mesh=mesh)
  return config, workdir, summary


def test_mesh_shapes():
  devices = jax.devices()
  assert len(devices) == 8
  for seeds, shape in ((1, (1, 8)), (2, (2, 4)), (4, (4, 2)), (8, (8, 1)), (16, (8, 1)),
                       (3, (1, 8)), (5, (1, 8)), (6, (2, 4))):
    mesh = parallel.make_mesh(devices, num_seeds=seeds)
    assert (mesh.shape['seed'], mesh.shape['data']) == shape, seeds


@pytest.mark.parametrize('where', ['4x2 mesh', 'one device'])
def test_four_seeds_equal_four_runs(four_seeds, single_runs, tmp_path, where):
  config, workdir, _ = four_seeds
  if where == 'one device':  # all four seeds vmapped on one device
    workdir = str(tmp_path / 'one_device')
    train_loop.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:1]))
  stacked = _variables(workdir, config)
  lines = [l for l in _lines(workdir) if 'loss' in l]
  for i, (single_config, single_dir) in enumerate(single_runs):
    conftest.assert_trees_close(train_step.replica(stacked, i), train_step.replica(
        _variables(single_dir, single_config), 0), atol=1e-5)
    single_lines = [l for l in _lines(single_dir) if 'loss' in l]
    assert [l['step'] for l in lines] == [l['step'] for l in single_lines]
    for line, single in zip(lines, single_lines):
      mine = line['per_seed'][i]
      assert mine['seed'] == i
      for key in ('loss', 'loss_cls', 'loss_div', 'loss_hom', 'diag_fg_mean', 'grad_norm'):
        assert mine[key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key
  # The per-seed evaluation is each single run's evaluation.
  results = _json(os.path.join(workdir, 'results.json'))
  for entry, (_, single_dir) in zip(results['per_seed'], single_runs):
    single = _json(os.path.join(single_dir, 'results.json'))
    assert entry['average_map'] == pytest.approx(single['average_map'], abs=1e-4)
    assert entry['fg_auc'] == pytest.approx(single['fg_auc'], abs=1e-4)


def test_results_schema_and_files(four_seeds):
  config, workdir, summary = four_seeds
  results = _json(os.path.join(workdir, 'results.json'))
  per_seed = results['per_seed']
  assert [e['seed'] for e in per_seed] == [0, 1, 2, 3] and results['num_seeds'] == 4
  maps = np.array([e['map'] for e in per_seed])
  averages = np.array([e['average_map'] for e in per_seed])
  np.testing.assert_allclose(results['map'], maps.mean(0), atol=1e-12)
  np.testing.assert_allclose(results['map_std'], maps.std(0, ddof=1), atol=1e-12)
  assert results['average_map'] == pytest.approx(averages.mean(), abs=1e-12)
  assert results['average_map_std'] == pytest.approx(averages.std(ddof=1), abs=1e-12)
  aucs = np.array([e['fg_auc'] for e in per_seed])
  assert results['fg_auc'] == pytest.approx(aucs.mean(), abs=1e-12)
  assert results['fg_auc_std'] == pytest.approx(aucs.std(ddof=1), abs=1e-12)
  assert summary['average_map'] == results['average_map'] and results['step'] == 4
  assert results['best_by_test_map']['average_map'] == pytest.approx(results['average_map'])
  for entry in per_seed:  # W/seed_<s>/: what a single run of seed s writes into W
    seed_dir = os.path.join(workdir, f'seed_{entry["seed"]}')
    own = _json(os.path.join(seed_dir, 'results.json'))
    assert own['seed'] == entry['seed'] and own['average_map'] == entry['average_map']
    assert own['fg_auc'] == entry['fg_auc']
    assert 'results' in _json(os.path.join(seed_dir, 'proposals_test.json'))
    assert os.path.exists(os.path.join(seed_dir, 'ground_truth_test.json'))
    assert 'class_unit_usage.png' in os.listdir(os.path.join(seed_dir, 'plots'))
  assert not os.path.exists(os.path.join(workdir, 'proposals_test.json'))
  lines = _lines(workdir)
  train = [l for l in lines if 'loss' in l]
  for line in train:  # the logged value is the mean over seeds; every seed is there
    assert line['loss'] == pytest.approx(np.mean([e['loss'] for e in line['per_seed']]))
    assert line['videos_per_sec'] == pytest.approx(
        config.batch_size * SEEDS * line['steps_per_sec'])
  evals = [l for l in lines if 'average_map' in l]
  assert evals[-1]['average_map_std'] == results['average_map_std']
  assert [e['average_map'] for e in evals[-1]['per_seed']] == averages.tolist()


def test_evaluate_py_reproduces_the_seeds(four_seeds):
  config, workdir, _ = four_seeds
  proc = subprocess.run(
      [sys.executable, 'evaluate.py', '--config', 'configs/synthetic.py', '--workdir', workdir,
       f'--config.data.data_dir={config.data.data_dir}', '--config.data.synthetic_preset=tiny',
       *(f'--config.{k}={v}' for k, v in (
           ('data.max_snippets', 32), ('data.eval_buckets', '(64,128,256)'),
           ('data.eval_batch_size', 8), ('model.dim', 16), ('model.num_units', 4),
           ('batch_size', 8), ('optim.learning_rate', 1e-4), ('num_train_steps', 4),
           ('log_every_steps', 2), ('eval_every_steps', 4), ('checkpoint_every_steps', 2),
           ('evaluation.num_plots', 1), ('num_seeds', SEEDS)))],
      cwd=conftest.REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '± ' in proc.stdout and 'over seeds [0, 1, 2, 3]' in proc.stdout
  again = _json(os.path.join(workdir, 'eval_step_4', 'results.json'))
  results = _json(os.path.join(workdir, 'results.json'))
  np.testing.assert_allclose(again['map'], results['map'], atol=1e-12)
  assert again['per_seed'] == results['per_seed']


def test_resumed_seeds_equal_uninterrupted(four_seeds, tmp_path):
  config, workdir_full, _ = four_seeds
  workdir = str(tmp_path / 'resumed')
  mesh = parallel.make_mesh(num_seeds=SEEDS)
  first = config.copy_and_resolve_references()
  first.num_train_steps = 2
  train_loop.train_and_evaluate(first, workdir, mesh=mesh)
  train_loop.train_and_evaluate(config, workdir, mesh=mesh)
  conftest.assert_trees_close(_variables(workdir_full, config), _variables(workdir, config),
                              atol=0)


def test_three_seeds_on_eight_devices(tiny_data_dir, single_runs, tmp_path):
  """An odd count on 8 devices: a 1 x 8 mesh, the seeds vmapped on every device."""
  config = _config(tiny_data_dir, num_seeds=3, seed=1, num_train_steps=2)
  train_loop.train_and_evaluate(config, str(tmp_path), mesh=parallel.make_mesh(num_seeds=3))
  lines = [l for l in _lines(str(tmp_path)) if 'loss' in l]
  assert [e['seed'] for e in lines[0]['per_seed']] == [1, 2, 3]
  for i, (_, single_dir) in enumerate(single_runs[1:]):
    single = [l for l in _lines(single_dir) if 'loss' in l][0]
    assert lines[0]['per_seed'][i]['loss'] == pytest.approx(single['loss'], rel=1e-5)


def test_num_seeds_is_checked_and_fixed_for_a_run(tiny_data_dir, four_seeds, tmp_path):
  bad = _config(tiny_data_dir, num_seeds=0)
  with pytest.raises(errors.TrainingError, match=r'config.num_seeds=0: must be an integer > 0'):
    train_loop.train_and_evaluate(bad, str(tmp_path / 'bad'))
  config, workdir, _ = four_seeds
  changed = config.copy_and_resolve_references()
  changed.num_seeds = 2
  with pytest.raises(errors.TrainingError, match=r'changes num_seeds=4 -> 2'):
    train_loop.train_and_evaluate(changed, workdir)


def test_a_checkpoint_without_the_seed_axis_restores(tiny_data_dir, tmp_path):
  """A run saved before states carried a seed axis resumes (single seed)."""
  config = _config(tiny_data_dir)
  num_classes = data.load_split(config.data.data_dir, 'synthetic', 'train').num_classes
  mesh = parallel.make_mesh(jax.devices()[:1])
  stacked = train_step.init_state(config, num_classes, mesh)
  old = jax.tree.map(lambda x: x[0], stacked)  # the old layout: no leading axis
  manager = checkpointing.create_manager(str(tmp_path))
  manager.save(3, args=ocp.args.StandardSave(old))
  manager.wait_until_finished()
  restored = checkpointing.restore(manager, 3, stacked)
  manager.close()
  for part in ('params', 'opt_state'):
    conftest.assert_trees_close(jax.device_get(getattr(restored, part)),
                                jax.device_get(getattr(stacked, part)), atol=0)
  assert restored.step.shape == (1,)
