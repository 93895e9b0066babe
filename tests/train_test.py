"""The training loop end to end on the tiny synthetic set: equivalences, resume, failures.

Every run here goes through train_loop.train_and_evaluate (the code `train.py` runs), so the
equivalences below hold for the real command, not for a test-only loop.
"""
import errno
import json
import os
import re
import signal
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import conftest
from aumn_jax import checkpointing
from aumn_jax import config_checks
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import eval_loop
from aumn_jax import losses
from aumn_jax import parallel
from aumn_jax import train_loop
from aumn_jax import train_step

REPO = conftest.REPO
TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def uninterrupted(tiny_data_dir, tmp_path_factory):
  """One 4-step run over all 8 devices; other tests compare against it."""
  config = conftest.tiny_config(tiny_data_dir)
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  summary = train_loop.train_and_evaluate(config, workdir)
  return config, workdir, summary


def test_run_writes_its_outputs(uninterrupted):
  config, workdir, summary = uninterrupted
  lines = conftest.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  train_lines = [l for l in lines if 'train/loss' in l or 'loss' in l and 'map' not in l]
  eval_lines = [l for l in lines if 'average_map' in l]
  assert [l['step'] for l in train_lines] == [2, 4]
  for key in ('loss', 'loss_cls', 'loss_div', 'loss_hom', 'loss_sp', 'loss_read'):
    assert all(np.isfinite(l[key]) for l in train_lines), key
  for l in train_lines:
    assert l['steps_per_sec'] > 0
    assert l['videos_per_sec'] == pytest.approx(config.batch_size * l['steps_per_sec'])
  assert [l['step'] for l in eval_lines] == [4]
  assert len(eval_lines[0]['map']) == len(config.evaluation.tiou_thresholds)
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  assert results['step'] == 4 and results['average_map'] == pytest.approx(summary['average_map'])
  assert results['best_by_test_map']['step'] == 4
  with open(os.path.join(workdir, 'proposals_test.json'), encoding='utf-8') as f:
    assert 'results' in json.load(f)
  plots = sorted(os.listdir(os.path.join(workdir, 'plots')))
  assert config.model.head == 'aumn' and 'class_unit_usage.png' in plots   # AUMN: + the matrix
  with open(os.path.join(workdir, 'plots', 'class_unit_usage.json'), encoding='utf-8') as f:
    usage = json.load(f)
  assert usage['rows'][-1] == 'background' and len(usage['usage'][0]) == config.model.num_units
  pngs = [p for p in plots if p.endswith('.png')]
  assert len(pngs) == config.evaluation.num_plots + 1 and len(plots) == len(pngs) + 1


def test_evaluations_report_the_attention_auc(uninterrupted):
  """Each evaluation logs fg_auc, results.json holds the final one, and it equals the pairwise
  AUC of the final checkpoint's a against snippets labelled from W/ground_truth_test.json."""
  config, workdir, summary = uninterrupted
  evals = [l for l in conftest.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
           if 'average_map' in l]
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  assert evals[-1]['fg_auc'] == results['fg_auc'] == summary['fg_auc']
  mesh = parallel.make_mesh()
  split = data.load_split(config.data.data_dir, config.data.dataset, config.data.eval_split)
  manager = checkpointing.create_manager(workdir, read_only=True)
  state = checkpointing.restore(manager, manager.latest_step(),
                                train_step.init_state(config, split.num_classes, mesh))
  _, eval_fn = train_step.jit_steps(config, mesh)
  outputs, = eval_loop.predict(eval_fn, state, split, config, mesh)
  with open(os.path.join(workdir, 'ground_truth_test.json'), encoding='utf-8') as f:
    database = json.load(f)['database']
  scores, positive = [], []
  for i, video_id in enumerate(split.video_ids):
    meta = split.meta(i)
    seconds = float(meta['snippet_stride']) / float(meta['fps'])
    segments = [a['segment'] for a in database[video_id]['annotations']]
    for t, a in enumerate(outputs[video_id]['fg']):  # at least half inside one instance
      overlap = max([min((t + 1) * seconds, e) - max(t * seconds, s) for s, e in segments],
                    default=0.0)
      scores.append(float(a))
      positive.append(overlap >= 0.5 * seconds)
  scores, positive = np.array(scores), np.array(positive)
  assert 0 < positive.sum() < len(positive)
  assert results['fg_auc'] == pytest.approx(conftest.pairwise_auc(scores, positive), abs=1e-9)


def test_the_files_of_a_run_reproduce_its_results_in_the_numpy_evaluator(uninterrupted):
  """evaluate.py's file mode on W/ground_truth_test.json + W/proposals_test.json alone."""
  _, workdir, _ = uninterrupted
  proc = subprocess.run(
      [sys.executable, 'evaluate.py', '--ground_truth', os.path.join(workdir,
                                                                     'ground_truth_test.json'),
       '--proposals', os.path.join(workdir, 'proposals_test.json'), '--drop_unknown_labels',
       '--output', os.path.join(workdir, 'file_mode.json')],
      cwd=REPO, capture_output=True, text=True, timeout=120, env=conftest.worker_env(1))
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    expected = json.load(f)
  with open(os.path.join(workdir, 'file_mode.json'), encoding='utf-8') as f:
    got = json.load(f)
  np.testing.assert_allclose(got['map'], expected['map'], rtol=0, atol=1e-12)


def test_eight_devices_equal_one(uninterrupted, tmp_path):
  config, workdir8, _ = uninterrupted
  workdir1 = str(tmp_path / 'one_device')
  train_loop.train_and_evaluate(config, workdir1, mesh=parallel.make_mesh(jax.devices()[:1]))
  eight, _ = conftest.checkpoint_variables(workdir8, config)
  one, _ = conftest.checkpoint_variables(workdir1, config)
  conftest.assert_trees_close(eight, one, atol=1e-5)


def test_resume_equals_uninterrupted(uninterrupted, tmp_path):
  config, workdir_full, _ = uninterrupted
  workdir = str(tmp_path / 'resumed')
  first = config.copy_and_resolve_references()
  with first.unlocked():
    first.num_train_steps = 2
  train_loop.train_and_evaluate(first, workdir)
  train_loop.train_and_evaluate(config, workdir)  # same command again: resumes at step 2
  full, _ = conftest.checkpoint_variables(workdir_full, config)
  resumed, step = conftest.checkpoint_variables(workdir, config)
  assert step == 4
  # Bitwise on CPU: same data, same rng, same programs.
  conftest.assert_trees_close(full, resumed, atol=0)
  # The resume is on record, with what changed; config.json holds the extended run.
  resumes = conftest.read_jsonl(os.path.join(workdir, 'resumes.jsonl'))
  assert [(r['step'], r['changed']) for r in resumes] == [(2, {'num_train_steps': [2, 4]})]
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['num_train_steps'] == 4


# A failed orbax restore leaves an asyncio callback that fires after its loop closed.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('cut', ['every_file', 'array_data_only'])
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(cut, uninterrupted,
                                                                      tmp_path, capsys):
  config, workdir_full, _ = uninterrupted
  workdir = str(tmp_path / 'w')
  train_loop.train_and_evaluate(config, workdir)  # checkpoints at steps 2 and 4
  latest = os.path.join(workdir, 'checkpoints', '4')
  for root, _, names in os.walk(latest):  # files cut in half
    for name in names:
      path = os.path.join(root, name)
      is_array_data = os.sep + 'd' + os.sep in path  # tensorstore chunks, not JSON records
      if os.path.getsize(path) > 1 and (cut == 'every_file' or is_array_data):
        with open(path, 'r+b') as f:
          f.truncate(os.path.getsize(path) // 2)
  capsys.readouterr()
  train_loop.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert 'checkpoints/4: damaged checkpoint' in out and 'at step 2' in out, out
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_damaged', '4'))
  full, _ = conftest.checkpoint_variables(workdir_full, config)
  again, step = conftest.checkpoint_variables(workdir, config)
  assert step == 4
  conftest.assert_trees_close(full, again, atol=0)  # steps 3-4 retrained: the uninterrupted result


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(
    tiny_data_dir, tmp_path, monkeypatch):
  config = conftest.tiny_config(tiny_data_dir)
  workdir = str(tmp_path)
  good = config.copy_and_resolve_references()
  with good.unlocked():
    good.num_train_steps = 2
  train_loop.train_and_evaluate(good, workdir)

  original = losses.total_loss
  monkeypatch.setattr(losses, 'total_loss',
                      lambda *a, **k: (original(*a, **k)[0] * np.nan, original(*a, **k)[1]))
  with pytest.raises(errors.TrainingError, match='non-finite loss .* at step 3'):
    train_loop.train_and_evaluate(config, workdir)
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.all_steps() == [2]


class _NoSpaceLeft:
  """A commit future of orbax's background save that fails like a full disk."""

  def result(self, timeout=None):  # pylint: disable=unused-argument
    raise OSError(errno.ENOSPC, 'No space left on device')

  def cancel(self):
    return False


def test_a_failed_save_stops_the_run_and_the_rerun_resumes_from_the_last_good_one(
    uninterrupted, tmp_path, monkeypatch):
  config, workdir_full, _ = uninterrupted
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.checkpoint_every_steps = config.log_every_steps = 1
  workdir = str(tmp_path / 'w')
  handler = ocp.StandardCheckpointHandler
  original = handler.async_save

  async def async_save(self, directory, *args, **kwargs):  # step 2's save fails in background
    futures = await original(self, directory, *args, **kwargs)
    failing = os.path.basename(os.path.dirname(str(directory))).split('.')[0] == '2'
    return list(futures or []) + ([_NoSpaceLeft()] if failing else [])

  monkeypatch.setattr(handler, 'async_save', async_save)
  with pytest.raises(errors.TrainingError) as failure:
    train_loop.train_and_evaluate(config, workdir)
  message = str(failure.value)
  assert 'saving a checkpoint failed (OSError' in message and 'No space left' in message
  assert 'the saved steps [1] are kept' in message and '\n' not in message, message
  steps = [r['step'] for r in conftest.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))]
  assert max(steps) <= 3 and not os.path.exists(os.path.join(workdir, 'results.json'))

  monkeypatch.setattr(handler, 'async_save', original)  # space freed: the rerun resumes
  train_loop.train_and_evaluate(config, workdir)
  full, _ = conftest.checkpoint_variables(workdir_full, config)
  resumed, step = conftest.checkpoint_variables(workdir, config)
  assert step == 4
  conftest.assert_trees_close(full, resumed, atol=0)


@pytest.mark.parametrize('overrides', [
    {'model.head': 'mil'},
    {'loss.lambda_div': 0.0},
    {'loss.lambda_hom': 0.0},
    {'loss.lambda_sp': 0.0},
    {'loss.lambda_read': 0.0},
    {'loss.lambda_guide': 0.0},
    {'model.input_norm': 'none'},
    {'model.fg_input': 'embedding', 'model.fg_norm': 'center'},
    {'model.fg_input': 'features', 'model.fg_norm': 'layernorm', 'model.head': 'mil'},
    {'model.fg_norm': 'batch', 'model.head': 'mil'},  # mil with a `memory` collection too
])
def test_ablation_configs_train(tiny_data_dir, overrides):
  """Each ablation is a config change that trains with finite losses (no eval, 2 steps)."""
  from aumn_jax import data, input_pipeline  # pylint: disable=g-import-not-at-top
  config = conftest.tiny_config(tiny_data_dir)
  for key, value in overrides.items():
    group, field = key.split('.')
    config[group][field] = value
  split = data.load_split(config.data.data_dir, 'synthetic', 'train')
  mesh = parallel.make_mesh()
  state = train_step.init_state(config, split.num_classes, mesh)
  train_fn, _ = train_step.jit_steps(config, mesh)
  iterator = input_pipeline.TrainIterator(
      split, 0, seed=0, global_batch_size=config.batch_size,
      max_snippets=config.data.max_snippets, sampling=config.data.sampling,
      num_seeds=config.num_seeds)
  rngs = train_step.dropout_rngs(config, mesh)
  for _ in range(2):
    _, batch = next(iterator)
    inputs = {k: batch[k] for k in train_step.TRAIN_INPUTS}
    state, metrics = train_fn(
        state, parallel.to_global(inputs, parallel.seed_batch_sharded(mesh)), rngs)
  iterator.close()
  metrics = jax.device_get(metrics)
  assert np.all(np.isfinite(metrics['loss']))
  for name in ('div', 'hom', 'sp'):
    if config.loss[f'lambda_{name}'] == 0.0 or config.model.head == 'mil':
      # The term is still logged, but contributes nothing to the total.
      assert 'loss_' + name in metrics
  if config.model.head == 'mil':  # no bank; only fg_norm='batch' keeps a running mean there
    want = {'skeleton'} if config.model.fg_norm == 'batch' else set()
    assert set(state.memory) == want
  if config.model.fg_norm == 'batch':  # moved by the two steps, away from its zero start
    assert np.all(np.isfinite(state.memory['skeleton']['fg_mean']))
    assert np.abs(np.asarray(state.memory['skeleton']['fg_mean'])).max() > 0


@pytest.mark.slow
def test_training_lowers_the_loss_and_raises_map(tiny_data_dir, tmp_path):
  """A short training run beats the untrained model on the test split (both measured here)."""
  config = conftest.tiny_config(tiny_data_dir)
  config.num_train_steps = 0
  untrained = train_loop.train_and_evaluate(config, str(tmp_path / 'untrained'))
  config.num_train_steps = 60
  config.eval_every_steps = 60
  config.checkpoint_every_steps = 60
  config.log_every_steps = 10
  config.model.dim = 64
  config.optim.learning_rate = 1e-3
  trained = train_loop.train_and_evaluate(config, str(tmp_path / 'trained'))
  lines = [l for l in conftest.read_jsonl(str(tmp_path / 'trained' / 'metrics.jsonl')) if 'loss_cls' in l]
  assert lines[-1]['loss_cls'] < 0.8 * lines[0]['loss_cls'], [l['loss_cls'] for l in lines]
  # Measured: 2.2 % untrained -> 40.7 % after 60 steps (11.4 % with localization.score='class';
  # CPU runs are deterministic).
  before, after = untrained['average_map'], trained['average_map']
  assert after > max(3 * before, before + 0.05), (before, after)


# Run with cwd=tests/ (for `import conftest`); aumn_jax is the installed package.
_WORKER = textwrap.dedent('''
    from aumn_jax import parallel
    parallel.maybe_initialize_distributed()
    import conftest
    from aumn_jax import train_loop
    config = conftest.tiny_config({data_dir!r})
    config.num_train_steps = {steps}
    train_loop.train_and_evaluate(config, {workdir!r})
''')


def _start_two_processes(code, port):
  """Two worker processes x 2 devices, jax.distributed on 127.0.0.1:port."""
  return [subprocess.Popen(
      [sys.executable, '-c', code], cwd=TESTS, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      env=conftest.worker_env(2, AUMN_COORDINATOR=f'127.0.0.1:{port}', AUMN_NUM_PROCESSES='2',
                      AUMN_PROCESS_ID=str(i))) for i in range(2)]


def _finish_all(procs, timeout, timeout_message):
  """Every process's output; all must exit 0 within `timeout` (else all are killed)."""
  outputs = []
  for p in procs:
    try:
      outputs.append(p.communicate(timeout=timeout)[0].decode())
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(timeout_message)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


@pytest.mark.slow
def test_two_processes_equal_one_process(tiny_data_dir, tmp_path):
  """2 processes x 2 devices (jax.distributed on 127.0.0.1) == 1 process x 4 devices."""
  config = conftest.tiny_config(tiny_data_dir)
  workdir_mp = str(tmp_path / 'two_processes')
  code = _WORKER.format(data_dir=tiny_data_dir, workdir=workdir_mp, steps=4)
  procs = _start_two_processes(code, port=20000 + os.getpid() % 20000)
  _finish_all(procs, 600, 'multi-process run timed out')

  workdir_sp = str(tmp_path / 'one_process')
  train_loop.train_and_evaluate(config, workdir_sp, mesh=parallel.make_mesh(jax.devices()[:4]))
  multi, _ = conftest.checkpoint_variables(workdir_mp, config)
  single, _ = conftest.checkpoint_variables(workdir_sp, config)
  conftest.assert_trees_close(multi, single, atol=1e-5)


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tiny_data_dir, tmp_path):
  """A preemption notice to process 1 only: JAX's preemption service picks the step, both
  processes save it together and exit 0; the checkpoint is that step."""
  workdir = str(tmp_path / 'w')
  code = _WORKER.format(data_dir=tiny_data_dir, workdir=workdir, steps=100000)
  procs = _start_two_processes(code, port=20000 + (os.getpid() + 7) % 20000)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics)) and time.time() < deadline:
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.5)
  procs[1].send_signal(signal.SIGTERM)
  outputs = _finish_all(procs, 300, 'the processes did not stop together')
  step = int(outputs[0].split('SIGTERM: saved a checkpoint at step ')[1].split(';')[0])
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == step > 0


@pytest.mark.slow
def test_sigterm_saves_and_the_rerun_resumes(tiny_data_dir, tmp_path):
  workdir = str(tmp_path)
  code = _WORKER.format(data_dir=tiny_data_dir, workdir=workdir, steps=100000)
  proc = subprocess.Popen([sys.executable, '-c', code], cwd=TESTS, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=conftest.worker_env(8))
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 300
  while not (os.path.exists(metrics) and os.path.getsize(metrics)) and time.time() < deadline:
    if proc.poll() is not None:
      break
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0].decode()
  assert proc.returncode == 0, out[-3000:]
  assert 'SIGTERM: saved a checkpoint at step' in out
  step = int(out.split('SIGTERM: saved a checkpoint at step ')[1].split(';')[0])
  manager = checkpointing.create_manager(workdir, read_only=True)
  assert manager.latest_step() == step > 0


@pytest.mark.slow
def test_ctrl_c_saves_says_one_line_and_exits_130(tiny_data_dir, tmp_path):
  workdir = tmp_path / 'w'
  proc = subprocess.Popen(
      [sys.executable, 'train.py', '--config=configs/synthetic.py', f'--workdir={workdir}',
       f'--config.data.data_dir={tiny_data_dir}', '--config.data.max_snippets=32',
       '--config.data.eval_buckets=(64, 128, 256)', '--config.data.eval_batch_size=8',
       '--config.model.dim=16', '--config.model.num_units=4', '--config.batch_size=8',
       '--config.num_train_steps=100000', '--config.log_every_steps=2',
       '--config.eval_every_steps=100000', '--config.checkpoint_every_steps=100000'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=conftest.worker_env(1))
  metrics = workdir / 'metrics.jsonl'
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.stat().st_size) and time.time() < deadline:
    if proc.poll() is not None:
      break
    time.sleep(0.5)
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, (out[-2000:], err[-2000:])
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-2000:]
  step = int((out + err).split('SIGINT: saved a checkpoint at step ')[1].split(';')[0])
  assert checkpointing.create_manager(str(workdir), read_only=True).latest_step() == step > 0


@pytest.mark.parametrize('args,message', [
    (['--config.model.num_unit=3'],
     "--config.model.num_unit=3: config.model has no field 'num_unit' (did you mean "
     "'num_units'?)"),
    (['--config.data.data=1'],
     "--config.data.data=1: config.data has no field 'data' (did you mean 'dataset'?)"),
    (['--config.model.dim=3', '--config.loss.dim=4'],  # the second one is wrong
     "--config.loss.dim=4: config.loss has no field 'dim'"),
    (['--config.model.dim.x=1'], '--config.model.dim.x=1: config.model.dim is a int, it has no '
     'fields'),
])
def test_bad_config_key_is_one_line_naming_the_argument(tmp_path, args, message):
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/synthetic.py', f'--workdir={tmp_path}',
       *args], cwd=REPO, capture_output=True, text=True, timeout=120,
      env=conftest.worker_env(1))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [f'error: {message}']
  assert not os.listdir(tmp_path)


def test_a_bad_config_file_inside_a_flagfile_is_named(tmp_path):
  (tmp_path / 'bad.py').write_text('def get_config(:\n')
  (tmp_path / 'flags.txt').write_text(f'--config={tmp_path}/bad.py\n')
  proc = subprocess.run(
      [sys.executable, 'train.py', f'--flagfile={tmp_path}/flags.txt', f'--workdir={tmp_path}/w'],
      cwd=REPO, capture_output=True, text=True, timeout=120, env=conftest.worker_env(1))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      f'error: --config={tmp_path}/bad.py: this config file fails to load: SyntaxError: invalid '
      'syntax (bad.py, line 1)']


@pytest.mark.parametrize('text,problem,form', [
    ('def get_config(:\n', 'SyntaxError: invalid syntax', 'equals'),
    ('import no_such_module\n', "ModuleNotFoundError: No module named 'no_such_module'",
     'space'),
    ('def get_config():\n  return 3\n', 'TypeError: get_config() returned int, not a ConfigDict',
     'equals'),
    ('def get_config():\n  return None\n',
     'TypeError: get_config() returned NoneType, not a ConfigDict', 'space'),
    ('def get_config():\n  return {}[0]\n', 'KeyError: 0', 'equals'),
    ('def get_config():\n  return open("no_such.json")\n',
     "FileNotFoundError: [Errno 2] No such file or directory: 'no_such.json'", 'space'),
    ('def get_config(arg):\n  return {}[arg]\n', 'KeyError: an_arg', 'equals'),
])
def test_a_config_file_that_fails_to_load_is_one_line_naming_it(tmp_path, text, problem, form):
  """A user's own config file: a syntax error, a failed import, get_config() raising or
  returning something else; one line naming the file and nothing else on stderr (no logging
  from ml_collections), with --config=PATH[:ARG] alone or --config PATH[:ARG] before a
  --config.KEY (the cases alternate the two forms: one subprocess each)."""
  config = tmp_path / 'my_config.py'
  config.write_text(text)
  path = f'{config}:an_arg' if 'arg' in text else str(config)
  args = [f'--config={path}'] if form == 'equals' else ['--config', path,
                                                         '--config.batch_size=4']
  proc = subprocess.run(
      [sys.executable, 'train.py', *args, f'--workdir={tmp_path}/w'], cwd=REPO,
      capture_output=True, text=True, timeout=120, env=conftest.worker_env(1))
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f'error: --config={path}: this config file fails to load'), lines
  assert problem in lines[0]
  assert not os.path.exists(tmp_path / 'w')


def test_a_cluster_jax_cannot_join_is_one_line(tmp_path):
  """SLURM_NTASKS=2 outside a SLURM job: JAX finds no coordinator; one line, nothing written."""
  env = conftest.worker_env(1, SLURM_NTASKS='2')
  for key in [k for k in env if k.startswith('SLURM_') and k != 'SLURM_NTASKS']:
    del env[key]
  proc = subprocess.run(
      [sys.executable, 'train.py', '--config=configs/synthetic.py', f'--workdir={tmp_path}/w'],
      cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-2000:]
  assert proc.stderr.startswith('error: SLURM_NTASKS=2 asks for a multi-process run')
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('script', ['train.py', 'evaluate.py'])
def test_missing_config_file_is_one_line_listing_the_configs(script, tmp_path):
  proc = subprocess.run(
      [sys.executable, script, '--config=configs/nope.py', f'--workdir={tmp_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=120, env=conftest.worker_env(1))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
  assert '--config=configs/nope.py: cannot load' in proc.stderr
  assert 'configs/thumos.py' in proc.stderr
  assert not os.listdir(tmp_path)


def test_bfloat16_compute_trains_like_float32(uninterrupted, tmp_path):
  """compute_dtype='bfloat16': conv and matmuls in bf16, parameters and losses in float32."""
  config, workdir_full, summary_full = uninterrupted
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.compute_dtype = 'bfloat16'
  workdir = str(tmp_path)
  summary = train_loop.train_and_evaluate(config, workdir)
  rows = {r['step']: r for r in conftest.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          if 'loss' in r}
  rows_full = {r['step']: r for r in conftest.read_jsonl(os.path.join(workdir_full, 'metrics.jsonl'))
               if 'loss' in r}
  assert sorted(rows) == sorted(rows_full)
  for step in rows:  # bf16 keeps ~3 significant digits of every product
    for key in ('loss', 'loss_cls', 'diag_fg_mean'):
      np.testing.assert_allclose(rows[step][key], rows_full[step][key], rtol=2e-2, err_msg=key)
  assert abs(summary['average_map'] - summary_full['average_map']) < 0.05
  params, _ = conftest.checkpoint_variables(workdir, config)
  assert all(v.dtype == np.float32 for v in jax.tree.leaves(params))  # stored in float32


@pytest.mark.parametrize('key,value,message', [
    ('compute_dtype', 'float16', "config.compute_dtype='float16': not one of ('float32'"),
    ('data.dataset', 'thumos', "config.data.dataset='thumos': not one of ('thumos14'"),
    ('data.eval_batch_size', 0, 'config.data.eval_batch_size=0: must be > 0'),
    ('data.synthetic_seed', -1, 'config.data.synthetic_seed=-1: must be >= 0'),
    ('loss.guide_center_steps', -1, 'config.loss.guide_center_steps must be >= 0'),
    ('optim.cosine_steps', -1, 'config.optim.cosine_steps must be >= 0'),
])
def test_bad_settings_are_refused_before_step_0(key, value, message, tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  *groups, name = key.split('.')
  node = config
  for group in groups:
    node = node[group]
  node[name] = value
  with pytest.raises(errors.TrainingError, match=re.escape(message)):
    train_loop.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.parametrize('cosine_steps', [0, 4])
def test_each_adam_step_moves_a_weight_by_the_scheduled_learning_rate(cosine_steps):
  """Under a constant gradient Adam's normalised step is +-1, so a weight moves by exactly the
  learning rate of that step: lr every step (cosine_steps=0, SPEC), else
  lr (1 + cos(pi t / T)) / 2 for t < T and 0 after (the closed form, computed here)."""
  lr, total = 1e-2, 6
  tx = train_step.make_optimizer(ml_collections.ConfigDict(
      dict(learning_rate=lr, weight_decay=0.0, cosine_steps=cosine_steps)))
  w = np.zeros(3, np.float32)
  state = tx.init(w)
  moved = []
  for _ in range(total):
    updates, state = tx.update(np.full(3, 0.5, np.float32), state, w)
    moved.append(float(-updates[0]))
    w = w + np.asarray(updates)
  t = np.arange(total)
  want = (np.full(total, lr) if not cosine_steps else
          np.where(t < cosine_steps, lr * (1 + np.cos(np.pi * t / cosine_steps)) / 2, 0))
  np.testing.assert_allclose(moved, want, rtol=1e-5, atol=1e-9)


def test_profile_steps_trace_that_window_and_bad_windows_are_refused(tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  config.num_train_steps = 3
  config.profile_steps = (1, 2)
  train_loop.train_and_evaluate(config, str(tmp_path / 'w'))
  traces = [f for _, _, names in os.walk(tmp_path / 'w' / 'profile') for f in names
            if f.endswith('.xplane.pb')]
  assert len(traces) == 1, traces
  config.profile_steps = (2, 1)
  with pytest.raises(errors.TrainingError, match=re.escape(
      'config.profile_steps=(2, 1): expected (start, end) with 0 <= start <= end')):
    train_loop.train_and_evaluate(config, str(tmp_path / 'bad'))
  assert not os.path.exists(tmp_path / 'bad')


@pytest.mark.slow
def test_compilation_cache_is_written_then_used(tiny_data_dir, tmp_path):
  """train.py --compilation_cache=DIR: the first run writes compiled steps there, a second run
  (another workdir) compiles nothing new; a cache dir that cannot be made is one warning."""
  env = conftest.worker_env(1)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # conftest's, for the other tests
  # JAX writes only compilations slower than this (default 1 s): on a loaded machine a step near
  # the threshold is written by one run and not the other. At 0 every compilation is written, so
  # 'the second run writes nothing' means 'the second run compiled nothing'.
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  cache = tmp_path / 'cache'
  (tmp_path / 'a_file').write_text('')

  def train(workdir, cache_dir):
    return subprocess.run(
        [sys.executable, 'train.py', '--config=configs/synthetic.py', f'--workdir={workdir}',
         f'--compilation_cache={cache_dir}', f'--config.data.data_dir={tiny_data_dir}',
         '--config.data.max_snippets=32', '--config.data.eval_buckets=(64, 128, 256)',
         '--config.data.eval_batch_size=8', '--config.model.dim=16',
         '--config.model.num_units=4', '--config.batch_size=8', '--config.num_train_steps=2',
         '--config.eval_every_steps=2'],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)

  first = train(tmp_path / 'w1', cache)
  assert first.returncode == 0, first.stderr[-2000:]
  entries = sorted(os.listdir(cache))
  assert entries
  second = train(tmp_path / 'w2', cache)
  assert second.returncode == 0, second.stderr[-2000:]
  assert sorted(os.listdir(cache)) == entries
  third = train(tmp_path / 'w3', tmp_path / 'a_file' / 'cache')
  assert third.returncode == 0, third.stderr[-2000:]
  assert 'warning: compilation cache' in third.stdout + third.stderr


def test_workdir_under_a_file_is_one_line_and_creates_nothing(tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(errors.TrainingError, match='cannot create the workdir: .*a_file is a file'):
    train_loop.train_and_evaluate(config, str(tmp_path / 'a_file' / 'w'))
  with pytest.raises(errors.TrainingError, match='the workdir is a file, not a directory'):
    train_loop.train_and_evaluate(config, str(tmp_path / 'a_file'))
  assert sorted(os.listdir(tmp_path)) == ['a_file']


def test_a_second_run_on_a_busy_workdir_stops_at_once(tiny_data_dir, tmp_path):
  from aumn_jax import files  # pylint: disable=g-import-not-at-top
  config = conftest.tiny_config(tiny_data_dir)
  workdir = tmp_path / 'w'
  workdir.mkdir()
  with files.exclusive_lock(workdir / train_loop.LOCK_FILE):  # a run in progress
    with pytest.raises(errors.TrainingError, match='another run is using this workdir'):
      train_loop.train_and_evaluate(config, str(workdir))
  assert os.listdir(workdir) == [train_loop.LOCK_FILE]  # nothing written by the refused run
  config.num_train_steps = 2
  assert train_loop.train_and_evaluate(config, str(workdir))['step'] == 2  # released: runs


@pytest.mark.parametrize('key', ['model.input_norm', 'model.fg_input', 'model.fg_norm',
                                 'model.unit_init', 'model.suppress', 'loss.guide_classes',
                                 'loss.guide_form'])
def test_unknown_skeleton_form_is_refused_before_anything_runs(key, tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  group, name = key.split('.')
  config[group][name] = 'centre'
  with pytest.raises(errors.TrainingError, match=f"config.{key}='centre': not one of"):
    train_loop.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'w')


def test_evaluate_checkpoint_reproduces_the_training_numbers(uninterrupted):
  config, workdir, summary = uninterrupted
  latest = eval_loop.evaluate_checkpoint(config, workdir)
  assert latest['map'] == summary['map'] and latest['step'] == 4  # exactly, not approximately
  assert latest['fg_auc'] == summary['fg_auc']
  with open(os.path.join(workdir, 'eval_step_4', 'results.json'), encoding='utf-8') as f:
    assert json.load(f)['average_map'] == summary['average_map']
  best = eval_loop.evaluate_checkpoint(config, workdir, best=True)
  assert best['average_map'] == summary['best_by_test_map']['average_map']


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # (see above)
def test_evaluate_a_damaged_or_empty_checkpoints_dir_is_one_line_and_changes_nothing(
    uninterrupted, tmp_path):
  config, workdir_full, _ = uninterrupted
  workdir = tmp_path / 'w'
  shutil.copytree(workdir_full, workdir)
  for root, _, names in os.walk(workdir / 'checkpoints' / '4'):
    for name in names:  # the tensorstore chunks of step 4 cut in half
      path = os.path.join(root, name)
      if os.sep + 'd' + os.sep in path and os.path.getsize(path) > 1:
        with open(path, 'r+b') as f:
          f.truncate(os.path.getsize(path) // 2)
  before = sorted(str(p) for p in workdir.rglob('*'))
  with pytest.raises(errors.TrainingError, match=re.escape(
      f'{workdir}/checkpoints/4: does not restore (')) as e:
    eval_loop.evaluate_checkpoint(config, str(workdir))
  assert 'evaluate another step (--step=2)' in str(e.value) and '\n' not in str(e.value)
  assert sorted(str(p) for p in workdir.rglob('*')) == before  # read-only: nothing moved
  assert eval_loop.evaluate_checkpoint(config, str(workdir), step=2)['step'] == 2
  empty = tmp_path / 'empty'
  (empty / 'checkpoints').mkdir(parents=True)
  shutil.copy(workdir / 'config.json', empty / 'config.json')
  with pytest.raises(errors.TrainingError, match='checkpoints: holds no checkpoint'):
    eval_loop.evaluate_checkpoint(config, str(empty))


def test_evaluate_cli_errors_are_one_line(tmp_path):
  for args, expected in [
      ([f'--workdir={tmp_path}'], 'needs both --config and --workdir'),
      (['--config=configs/synthetic.py', f'--workdir={tmp_path}'], 'no checkpoints/'),
  ]:
    proc = subprocess.run([sys.executable, 'evaluate.py', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=conftest.worker_env(1))
    assert proc.returncode != 0 and expected in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr


def test_resume_with_another_model_config_is_refused(uninterrupted, tmp_path):
  config, workdir, _ = uninterrupted
  other = config.copy_and_resolve_references()
  other.model.dim = 24
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    before = f.read()
  with pytest.raises(errors.TrainingError, match='model.dim=16'):
    train_loop.train_and_evaluate(other, workdir)
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert f.read() == before  # the run's record is untouched


def test_resume_with_a_changed_training_setting_is_refused_naming_it(uninterrupted):
  config, workdir, _ = uninterrupted
  other = config.copy_and_resolve_references()
  other.optim.learning_rate = 0.5
  other.seed = 3
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    before = f.read()
  with pytest.raises(errors.TrainingError) as e:
    train_loop.train_and_evaluate(other, workdir)
  assert 'optim.learning_rate=0.0001 -> 0.5' in str(e.value) and 'seed=0 -> 3' in str(e.value)
  assert '\n' not in str(e.value)
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert f.read() == before


def test_a_run_recorded_before_a_setting_existed_resumes_only_with_the_old_behaviour(
    uninterrupted, tmp_path):
  """config_checks.ADDED_LATER: a record without model.shared_classifier was trained without
  it, so resuming it under the new default is refused naming the key."""
  config, workdir, _ = uninterrupted
  old = tmp_path / 'old'
  old.mkdir()
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    record = json.load(f)
  del record['model']['shared_classifier'], record['model']['unit_init']
  (old / 'config.json').write_text(json.dumps(record))
  with pytest.raises(errors.TrainingError, match=re.escape(
      "model.shared_classifier=False -> True, model.unit_init='lecun' -> 'zeros'")):
    config_checks.check_same_run(config, str(old))
  spec = config.copy_and_resolve_references()
  spec.model.shared_classifier, spec.model.unit_init = False, 'lecun'
  assert config_checks.check_same_run(spec, str(old)) == {}


def test_rerun_of_a_finished_run_adds_no_duplicate_metrics(uninterrupted):
  config, workdir, _ = uninterrupted
  path = os.path.join(workdir, 'metrics.jsonl')
  before = conftest.read_jsonl(path)
  summary = train_loop.train_and_evaluate(config, workdir)  # finished: evaluates, trains nothing
  assert conftest.read_jsonl(path) == before
  assert summary['step'] == config.num_train_steps


def test_a_damaged_run_record_is_one_line_saying_what_to_do(tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  (tmp_path / 'config.json').write_text('')  # e.g. a disk that filled while writing it
  with pytest.raises(errors.TrainingError, match='config.json: damaged.*delete the file'):
    train_loop.train_and_evaluate(config, str(tmp_path))


def test_bad_localization_setting_fails_before_training(tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  config.localization.nms = 'hard'
  with pytest.raises(errors.TrainingError, match='localization.nms'):
    train_loop.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_metrics_after_the_resumed_step_are_dropped(tmp_path):
  from aumn_jax import metric_writer  # pylint: disable=g-import-not-at-top
  writer = metric_writer.MetricWriter(str(tmp_path), enabled=True)
  for step in (2, 4, 6):
    writer.write(step, {'loss': 1.0})
  writer.close()
  writer = metric_writer.MetricWriter(str(tmp_path), resume_step=4, enabled=True)
  writer.write(6, {'loss': 0.5})
  writer.close()
  assert [(l['step'], l['loss']) for l in conftest.read_jsonl(str(tmp_path / 'metrics.jsonl'))] == [
      (2, 1.0), (4, 1.0), (6, 0.5)]
