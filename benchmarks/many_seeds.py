r"""N seeds as one program (config.num_seeds=N) against N separate runs of train.py.

  python -m benchmarks.many_seeds [--config configs/synthetic.py] [--seeds 5] [--seed 0]
      [--workdir /tmp/aumn_many_seeds] [--json OUT.json] [--markdown OUT.md]
      [--set KEY=VALUE ...]

Runs, one after the other, each a fresh `python train.py --config=CONFIG` process (what a user
types; the persistent compilation cache is on in both, as by default):
  together   --config.num_seeds=N --config.seed=S                      one program
  separate   --config.seed=S+i (num_seeds 1), for i in 0..N-1           N programs
and reports the wall time of each (process start to exit: start-up, compilation, data loading,
training, evaluations), the training time alone (metrics.jsonl: steps / steps_per_sec summed
over the logged intervals; evaluations excluded) and each seed's final avg mAP both ways.
The program computes the separate runs' arithmetic batched over seeds (tests/seeds_test.py:
equal to 1e-5 over a few steps); XLA may order a batched matmul's sums differently, and over
hundreds of steps such rounding differences grow, so the table reports the per-seed
difference instead of asserting it away.
A finished run's workdir is reused (train.py resumes a finished run: evaluation only), so use
a fresh --workdir to time.
"""
import datetime
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags

from aumn_jax import cli
from aumn_jax import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def define_flags() -> None:  # at run time, not import: tests import this module beside others
  flags.DEFINE_string('config', 'configs/synthetic.py', 'The config file of every run.')
  flags.DEFINE_integer('seeds', 5, 'N: seeds per program.', lower_bound=2)
  flags.DEFINE_integer('seed', 0, 'The first seed S.', lower_bound=0)
  flags.DEFINE_string('workdir', '/tmp/aumn_many_seeds', 'One workdir per run under here.')
  flags.DEFINE_string('json', None, 'Write the results here as JSON.')
  flags.DEFINE_string('markdown', None, 'Write the table here.')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE: --config.KEY=VALUE for every run.')


def train(workdir: str, config: str, overrides: Sequence[str]) -> dict[str, Any]:
  """One train.py process of config file `config`; its wall time, training time and
  results.json."""
  cmd = [sys.executable, 'train.py', f'--config={config}', f'--workdir={workdir}',
         *(f'--config.{o}' for o in overrides)]
  print('$ ' + shlex.join(cmd), flush=True)
  start = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
  wall = time.perf_counter() - start
  if proc.returncode:  # train.py's own one-line `error: ...` says why
    said = [l[len('error: '):] for l in proc.stderr.splitlines() if l.startswith('error: ')]
    why = said[-1] if said else (f'killed by signal {-proc.returncode}' if proc.returncode < 0
                                 else f'exit status {proc.returncode}')
    if proc.returncode == 2:  # its command line, i.e. --config / --set here
      raise app.UsageError(f'train.py --workdir={workdir}: {why}')
    raise errors.UserError(f'train.py --workdir={workdir} failed: {why}')
  # SIGTERM (a preemption) exits 0 after its save: the run is not finished and its results.json,
  # if any, is an earlier one's.
  stopped = re.search(r'(SIG[A-Z]+): saved a checkpoint at step (\d+)', proc.stdout + proc.stderr)
  if stopped:
    raise errors.UserError(f'train.py --workdir={workdir}: stopped by {stopped[1]} at step '
                           f'{stopped[2]} (its checkpoint is saved); rerun the same command to '
                           'resume it')
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  return {'command': shlex.join(cmd), 'wall_s': wall, 'train_s': training_seconds(workdir),
          'results': results}


def training_seconds(workdir: str) -> float:
  """Seconds spent training (evaluations excluded): each logged interval's steps over its
  steps/s, summed."""
  total, previous = 0.0, 0
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    for line in map(json.loads, f):
      if 'steps_per_sec' in line:
        total += (line['step'] - previous) / line['steps_per_sec']
        previous = line['step']
  return total


def per_seed_maps(results: dict[str, Any], seed: int) -> dict[int, float]:
  if 'per_seed' in results:
    return {e['seed']: e['average_map'] for e in results['per_seed']}
  return {seed: results['average_map']}


def markdown(report: dict[str, Any]) -> str:
  together, separate = report['together'], report['separate']
  n = len(separate)
  sep_wall = sum(r['wall_s'] for r in separate)
  sep_train = sum(r['train_s'] for r in separate)
  maps = lambda m: ', '.join(f'{100 * m[s]:.2f}' for s in sorted(m))
  sep_maps = {}
  for i, r in enumerate(separate):
    sep_maps.update(per_seed_maps(r['results'], report['seed'] + i))
  tm = together['results']
  together_maps = per_seed_maps(tm, report['seed'])
  sep = [100 * sep_maps[s] for s in sorted(sep_maps)]
  diffs = [abs(100 * (together_maps[s] - sep_maps[s])) for s in sep_maps]
  lines = [
      f'{report["config"]}, seeds {report["seed"]}..{report["seed"] + n - 1}, '
      f'{report["date"]}, {report["machine"]}.',
      '',
      '| mode | processes | wall s | training s | avg mAP per seed (%) | mean ± std (%) |',
      '| --- | --- | --- | --- | --- | --- |',
      f'| one program (num_seeds={n}) | 1 | {together["wall_s"]:.0f} | '
      f'{together["train_s"]:.0f} | {maps(together_maps)} | '
      f'{100 * tm["average_map"]:.2f} ± {100 * tm["average_map_std"]:.2f} |',
      f'| separate runs | {n} | {sep_wall:.0f} | {sep_train:.0f} | {maps(sep_maps)} | '
      f'{statistics.mean(sep):.2f} ± {statistics.stdev(sep):.2f} |',
      '',
      f'Per-seed |one program − separate|: max {max(diffs):.2f}, mean {sum(diffs) / n:.2f} '
      'avg-mAP points.',
      '',
      f'One program / separate: wall {together["wall_s"] / sep_wall:.2f}×, training '
      f'{together["train_s"] / sep_train:.2f}×.',
      '',
      f'Command: `{report["command"]}`', '']
  return '\n'.join(lines)


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.check_output_paths(json=FLAGS.json, markdown=FLAGS.markdown)
  n, first = FLAGS.seeds, FLAGS.seed
  together = train(os.path.join(FLAGS.workdir, f'seeds_{first}-{first + n - 1}'), FLAGS.config,
                   [*FLAGS.set, f'num_seeds={n}', f'seed={first}'])
  separate = [train(os.path.join(FLAGS.workdir, f'seed_{first + i}'), FLAGS.config,
                    [*FLAGS.set, f'seed={first + i}']) for i in range(n)]
  report = {'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'command': 'python -m benchmarks.many_seeds ' + ' '.join(sys.argv[1:]),
            'config': FLAGS.config, 'seed': first, 'machine': f'{os.cpu_count()} CPU cores',
            'together': together, 'separate': separate}
  text = markdown(report)
  print(text)
  if FLAGS.json:
    with open(FLAGS.json, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=1)
  if FLAGS.markdown:
    with open(FLAGS.markdown, 'w', encoding='utf-8') as f:
      f.write(text)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
