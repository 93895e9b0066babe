"""The fault sweep: real `train.py` processes hit by the faults of a shared machine, each
workdir then rerun with the same command, which must end on the uninterrupted result (bitwise).

Faults: a full disk at start and mid-run (a real tmpfs; skipped where it cannot be mounted), a
truncated latest checkpoint, a second run on the same workdir, kill -9 while a checkpoint is
being written, a changed config on resume. Every failure is one `error:` line, never a
traceback. All runs: 1 CPU device, the tiny config, 60 steps, a checkpoint every 10.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import conftest
from aumn_jax import checkpointing

STEPS = 60
TIMEOUT = 600


def _command(workdir, data_dir, *extra):
  """train.py on configs/synthetic.py shrunk to conftest.tiny_config's sizes."""
  return [sys.executable, 'train.py', '--config=configs/synthetic.py', f'--workdir={workdir}',
          f'--config.data.data_dir={data_dir}', '--config.data.synthetic_preset=tiny',
          '--config.data.max_snippets=32', '--config.data.eval_buckets=(64, 128, 256)',
          '--config.data.eval_batch_size=8', '--config.model.dim=16',
          '--config.model.num_units=4', '--config.batch_size=8', '--config.optim.learning_rate=1e-4',
          f'--config.num_train_steps={STEPS}', '--config.log_every_steps=5',
          f'--config.eval_every_steps={STEPS}', '--config.checkpoint_every_steps=10', *extra]


def _run(workdir, data_dir, *extra):
  return subprocess.run(_command(workdir, data_dir, *extra), cwd=conftest.REPO,
                        capture_output=True, text=True, timeout=TIMEOUT,
                        env=conftest.worker_env(1))


def _start(workdir, data_dir):
  return subprocess.Popen(_command(workdir, data_dir), cwd=conftest.REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=conftest.worker_env(1))


def _wait_for(predicate, proc, what):
  deadline = time.time() + TIMEOUT
  while not predicate():
    if proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f'the run ended before {what}: {out[-1500:]} {err[-1500:]}')
    if time.time() > deadline:
      proc.kill()
      pytest.fail(f'timed out waiting for {what}')
    time.sleep(0.002)


def _saved(workdir, step):
  return lambda: os.path.isfile(os.path.join(workdir, 'checkpoints', str(step),
                                             '_CHECKPOINT_METADATA'))


def _one_error_line(proc):
  assert proc.returncode == 1, (proc.stdout[-2000:], proc.stderr[-2000:])
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('error: '), proc.stderr[-2000:]
  return last


def _final(workdir, data_dir):
  variables, step = conftest.checkpoint_variables(workdir, conftest.tiny_config(data_dir))
  assert step == STEPS, step
  return variables


def _assert_same(a, b):
  conftest.assert_trees_close(a, b, atol=0)


@pytest.fixture(scope='module')
def reference(tiny_data_dir, tmp_path_factory):
  """The uninterrupted run every faulted workdir must end on."""
  workdir = str(tmp_path_factory.mktemp('uninterrupted') / 'w')
  proc = _run(workdir, tiny_data_dir)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _final(workdir, tiny_data_dir)


def _rerun_ends_on(reference, workdir, data_dir):
  proc = _run(workdir, data_dir)
  assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
  _assert_same(_final(workdir, data_dir), reference)
  return proc


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_stops_and_the_first_is_untouched(
    reference, tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  first = _start(workdir, tiny_data_dir)
  _wait_for(_saved(workdir, 10), first, 'the first checkpoint')
  second = _run(workdir, tiny_data_dir)
  assert 'another run is using this workdir' in _one_error_line(second)
  out, err = first.communicate(timeout=TIMEOUT)
  assert first.returncode == 0, (out[-2000:], err[-2000:])
  _assert_same(_final(workdir, tiny_data_dir), reference)


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written(reference, tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  checkpoints = os.path.join(workdir, 'checkpoints')
  proc = _start(workdir, tiny_data_dir)
  writing = lambda: any('tmp' in n for n in os.listdir(checkpoints)) if os.path.isdir(
      checkpoints) else False
  _wait_for(writing, proc, 'a save in progress')
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=TIMEOUT)
  _rerun_ends_on(reference, workdir, tiny_data_dir)


@pytest.mark.slow
def test_a_changed_config_is_refused_and_the_same_one_resumes(reference, tiny_data_dir,
                                                              tmp_path):
  workdir = str(tmp_path / 'w')
  proc = _start(workdir, tiny_data_dir)
  _wait_for(_saved(workdir, 20), proc, 'the step-20 checkpoint')
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=TIMEOUT)
  assert proc.returncode == 0
  changed = _run(workdir, tiny_data_dir, '--config.optim.learning_rate=0.5')
  assert 'optim.learning_rate' in _one_error_line(changed)
  rerun = _rerun_ends_on(reference, workdir, tiny_data_dir)
  assert 'Resumed from' in rerun.stdout + rerun.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_truncated_latest_checkpoint(reference, tiny_data_dir, tmp_path):
  workdir = str(tmp_path / 'w')
  proc = _start(workdir, tiny_data_dir)
  _wait_for(_saved(workdir, 30), proc, 'the step-30 checkpoint')
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=TIMEOUT)
  latest = checkpointing.create_manager(workdir, read_only=True).latest_step()
  for root, _, names in os.walk(os.path.join(workdir, 'checkpoints', str(latest))):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
  rerun = _rerun_ends_on(reference, workdir, tiny_data_dir)
  assert f'checkpoints/{latest}: damaged checkpoint' in rerun.stdout + rerun.stderr


def _fill(directory):
  """Writes a ballast file into `directory` until its file system is full."""
  path = os.path.join(directory, 'ballast')
  with open(path, 'wb') as f:
    try:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
    except OSError:
      pass
  return path


@pytest.mark.slow
def test_a_disk_full_at_start(reference, tiny_data_dir, tmpfs):
  disk = tmpfs('64m')
  ballast = _fill(disk)
  workdir = str(disk / 'w')
  proc = _run(workdir, tiny_data_dir)
  assert 'No space left on device' in _one_error_line(proc)
  config_json = os.path.join(workdir, 'config.json')  # absent or whole, never half-written
  assert not os.path.exists(config_json) or json.load(open(config_json, encoding='utf-8'))
  os.remove(ballast)
  _rerun_ends_on(reference, workdir, tiny_data_dir)


@pytest.mark.slow
def test_a_disk_that_fills_during_training(reference, tiny_data_dir, tmpfs):
  disk = tmpfs('64m')
  workdir = str(disk / 'w')
  proc = _start(workdir, tiny_data_dir)
  _wait_for(_saved(workdir, 10), proc, 'the first checkpoint')
  ballast = _fill(disk)
  out, err = proc.communicate(timeout=TIMEOUT)
  last = _one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
  assert 'No space left on device' in last, last
  os.remove(ballast)
  _rerun_ends_on(reference, workdir, tiny_data_dir)
