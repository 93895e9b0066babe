"""aumn_jax/cli.py: a bug in an entry point is one line on stderr, its traceback in a file."""
import os
import subprocess
import sys
import textwrap

import pytest

import conftest
from aumn_jax import errors

_SCRIPT = textwrap.dedent('''
    from absl import flags
    from aumn_jax import cli
    flags.DEFINE_string('workdir', None, 'where the traceback goes')

    @cli.user_errors
    def main(argv):
      del argv
      {}['a key a bug forgot']

    cli.run(main)
''')


def _run(tmp_path, *args):
  script = tmp_path / 'entry_point.py'
  script.write_text(_SCRIPT)
  return subprocess.run([sys.executable, str(script), *args], cwd=conftest.REPO,
                        capture_output=True, text=True, timeout=60)


def test_a_bug_is_one_line_and_its_traceback_goes_to_the_workdir(tmp_path):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  proc = _run(tmp_path, f'--workdir={workdir}')
  assert proc.returncode == 1
  log = workdir / 'errors.log'
  assert proc.stderr.strip() == (
      "error: unexpected KeyError: 'a key a bug forgot' (a bug, not your input; the traceback "
      f'is in {log})')
  text = log.read_text()
  assert 'Traceback (most recent call last)' in text and "KeyError: 'a key a bug forgot'" in text


def test_without_a_workdir_the_traceback_goes_to_the_temp_dir(tmp_path):
  proc = _run(tmp_path, f'--workdir={tmp_path / "not_created"}')
  assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
  path = proc.stderr.strip().split('the traceback is in ')[1].rstrip(')')
  try:
    assert os.path.dirname(path) != str(tmp_path / 'not_created')
    with open(path, encoding='utf-8') as f:
      assert 'KeyError' in f.read()
  finally:
    os.remove(path)
  assert not os.path.exists(tmp_path / 'not_created')


def test_a_flag_value_main_refuses_is_one_line_and_status_2(tmp_path):
  """app.UsageError raised inside a @user_errors main (every entry point checks some flags
  itself) is the command line's mistake, not a bug: one line, status 2, no traceback file."""
  script = tmp_path / 'entry_point.py'
  script.write_text(textwrap.dedent('''
      from absl import app
      from aumn_jax import cli

      @cli.user_errors
      def main(argv):
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')

      cli.run(main)
  '''))
  proc = subprocess.run([sys.executable, str(script), 'stray'], cwd=conftest.REPO,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: bad command line: unexpected arguments: ['stray']"


def test_robustness_refuses_an_unknown_regime_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'benchmarks/robustness.py', '--regimes', 'nope',
       '--workdir', str(tmp_path / 'w')], cwd=conftest.REPO, capture_output=True, text=True,
      timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "error: bad command line: --regimes: unknown ['nope']; known: "
      "['thumos', 'fewvideo', 'partial', 'fewvideo_partial', 'activitynet']"]
  assert not (tmp_path / 'w').exists()


def test_the_studies_refuse_bad_seeds_and_outputs_before_any_run(tmp_path):
  """robustness.py / ablation.py / snippet_probe.py check every flag before hours of runs: no
  dataset is built, no workdir made."""
  (tmp_path / 'cut.json').write_text('{')
  cases = [
      ('robustness.py', ['--seeds', '0,abc'], '--seeds=0,abc: expected distinct integers >= 0'),
      ('ablation.py', ['--seeds', '1,1'], '--seeds=1,1: expected distinct integers >= 0'),
      ('snippet_probe.py', ['--seeds', '-1'], '--seeds=-1: expected distinct integers >= 0'),
      ('ablation.py', ['--data_seed', '-1'], '--data_seed=-1: -1 is not a non-negative integer'),
      ('robustness.py', ['--json', str(tmp_path / 'no_dir' / 'x.json')],
       f'--json={tmp_path}/no_dir/x.json: its directory does not exist'),
      ('ablation.py', ['--markdown', str(tmp_path)], f'--markdown={tmp_path}: is a directory'),
      ('ablation.py', ['--include_json', str(tmp_path / 'cut.json')],
       f'--include_json={tmp_path}/cut.json: not a --json output of this study'),
  ]
  for script, args, message in cases:
    proc = subprocess.run(
        [sys.executable, f'benchmarks/{script}', '--regimes', 'partial', *args,
         '--workdir', str(tmp_path / 'w')], cwd=conftest.REPO, capture_output=True, text=True,
        timeout=120)
    assert proc.returncode == 2, (script, args, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], (script, lines)
  assert not (tmp_path / 'w').exists()


def test_the_benchmarks_refuse_bad_flags_in_one_line_before_measuring(tmp_path):
  missing = tmp_path / 'no_dir' / 'out.json'
  cases = [
      ('localization', ['--repeats', '0'], 'flag --repeats=0: 0 is not a positive integer', 2),
      ('evaluator', ['--json', str(missing)], f'--json={missing}: its directory does not', 2),
      ('input_pipeline', ['--steps', '0'], 'flag --steps=0: 0 is not a positive integer', 2),
      ('step_time', ['--markdown', str(missing)], f'--markdown={missing}: its directory', 2),
      ('many_seeds', ['--seeds', '2', '--set', 'nosuch=1', '--workdir', str(tmp_path / 'w')],
       f"error: bad command line: train.py --workdir={tmp_path / 'w'}/seeds_0-1: "
       "--config.nosuch=1: config has no field 'nosuch'", 2),
      ('many_seeds', ['--seeds', '1'], 'flag --seeds=1: 1 is not integer >= 2', 2),
  ]
  for name, args, message, status in cases:
    proc = subprocess.run([sys.executable, '-m', f'benchmarks.{name}', *args],
                          cwd=conftest.REPO, capture_output=True, text=True, timeout=120,
                          env=conftest.worker_env(1))
    assert proc.returncode == status, (name, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], (name, lines)
  assert not os.listdir(tmp_path)


def test_a_flag_file_that_cannot_be_read_is_one_line_naming_it(tmp_path):
  """ml_collections reads --flagfile while train.py / evaluate.py define --config (at import):
  an unreadable one is one line and status 2 (was absl's traceback)."""
  missing = tmp_path / 'no_such_flags.txt'
  for script, args, why in (('train.py', [f'--flagfile={missing}'], 'no such file'),
                            ('evaluate.py', ['--flagfile', str(tmp_path)],
                             'a directory, not a file')):
    proc = subprocess.run([sys.executable, script, *args], cwd=conftest.REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (script, proc.stderr)
    assert proc.stderr.strip() == (
        f'error: --flagfile={args[-1].split("=")[-1]}: cannot read this flag file ({why})')


def test_many_seeds_says_a_train_py_stopped_by_sigterm_is_unfinished(tmp_path, monkeypatch):
  """train.py exits 0 on SIGTERM, after `SIGTERM: saved a checkpoint at step N; rerun to
  resume` (train_test checks that line): many_seeds must not read that run's results.json."""
  from benchmarks import many_seeds  # pylint: disable=g-import-not-at-top
  (tmp_path / 'results.json').write_text('{"average_map": 0.5}')  # an earlier run's
  stopped = subprocess.CompletedProcess(
      [], 0, stdout='', stderr='SIGTERM: saved a checkpoint at step 7; rerun to resume\n')
  monkeypatch.setattr(many_seeds.subprocess, 'run', lambda *a, **k: stopped)
  with pytest.raises(errors.UserError, match=(
      rf'^train.py --workdir={tmp_path}: stopped by SIGTERM at step 7 \(its checkpoint is '
      r'saved\); rerun the same command to resume it$')):
    many_seeds.train(str(tmp_path), 'configs/synthetic.py', [])
