"""The ablation study of SPEC.md §3: the BaS-Net baseline, AUMN, and AUMN with each mechanism off.

Run:  python benchmarks/ablation.py [--seeds 0,1,2] [--steps 300] [--variants mil,aumn,...]
          [--workdir /tmp/aumn_ablation] [--json OUT] [--markdown docs/ablation.md]
          [--set KEY=VALUE ...]

Every run goes through aumn_jax.train_loop.train_and_evaluate (the code `train.py` runs) on
configs/synthetic.py (the synthetic THUMOS-like preset, data seed 0, generated on first use),
with `seed` = the run's seed (model init, data order, dropout) and evaluation only at the end.
Variants are config changes only:
  mil      model.head='mil'                    BaS-Net baseline (one linear classifier)
  aumn     configs/synthetic.py as it is       all mechanisms
  no_div   loss.lambda_div=0                   units need not differ
  no_hom   loss.lambda_hom=0                   claimed snippets need not be close to their unit
  no_sp    loss.lambda_sp=0                    no read-sparsity term; this also drops the
                                               foreground L1 (SPEC §3 puts both in L_sp)
`--set KEY=VALUE` overrides the config of every variant (e.g. to run on the validation dataset:
--set data.synthetic_seed=1 --set data.data_dir=~/.cache/aumn_jax/synthetic_thumos_seed1).

After training, the latest checkpoint is restored and the test split predicted once more
(train_loop.predict) to score video classification: top-1 = fraction of test videos whose
highest suppressed-branch video probability among the C action columns is one of their
ground-truth classes (p' is what localization selects classes with, SPEC §5).

A finished run is not retrained: rerunning with the same --workdir only re-evaluates it (the
train loop resumes from its checkpoint), so an interrupted study continues where it stopped.
Output: per-run rows and the mean ± sample std (ddof=1) over seeds, printed, in --json and as a
markdown table in --markdown.
"""
import datetime
import json
import os
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags

# `python benchmarks/ablation.py` puts benchmarks/ on sys.path, not the repo root.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import ml_collections
import numpy as np

from aumn_jax import checkpointing
from aumn_jax import data
from aumn_jax import parallel
from aumn_jax import train_loop
from aumn_jax import train_step
from configs import synthetic
# pylint: enable=g-import-not-at-top,wrong-import-position

VARIANTS = {
    'mil': {'model.head': 'mil'},
    'aumn': {},
    'no_div': {'loss.lambda_div': 0.0},
    'no_hom': {'loss.lambda_hom': 0.0},
    'no_sp': {'loss.lambda_sp': 0.0},
}
DESCRIPTIONS = {
    'mil': 'BaS-Net baseline (`model.head=mil`)',
    'aumn': 'AUMN, all mechanisms',
    'no_div': 'AUMN, `loss.lambda_div=0`',
    'no_hom': 'AUMN, `loss.lambda_hom=0`',
    'no_sp': 'AUMN, `loss.lambda_sp=0` (no read sparsity, no foreground L1)',
}
AVERAGES = {'0.1:0.5': (0.1, 0.5), '0.3:0.7': (0.3, 0.7), '0.1:0.7': (0.1, 0.7)}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a script: importing this module (tests do)
  must not claim names such as --workdir that evaluate.py defines too."""
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Run seeds (config.seed).')
  flags.DEFINE_integer('steps', 300, 'Training steps per run (evaluated once, at the end).')
  flags.DEFINE_list('variants', list(VARIANTS), f'Subset of {list(VARIANTS)}.')
  flags.DEFINE_string('workdir', '/tmp/aumn_ablation', 'One sub-directory per variant and seed.')
  flags.DEFINE_string('json', None, 'Write every run and the summary here.')
  flags.DEFINE_string('markdown', None, 'Write the markdown table here (e.g. docs/ablation.md).')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE config override applied to every variant.')


def _parse_value(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def parse_overrides(items: Sequence[str]) -> list[tuple[str, Any]]:
  """--set KEY=VALUE items -> [(key, value)], values parsed as JSON where they are JSON."""
  overrides = []
  for item in items:
    key, sep, value = item.partition('=')
    if not sep:
      raise app.UsageError(f'--set {item!r}: expected KEY=VALUE')
    overrides.append((key, _parse_value(value)))
  return overrides


def apply_override(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  node = config
  *parents, leaf = key.split('.')
  for name in parents:
    node = node[name]
  if leaf not in node:
    raise KeyError(f'config has no field {key!r}')
  if isinstance(node[leaf], tuple) and isinstance(value, list):
    value = tuple(value)
  node[leaf] = value


def make_config(variant: str, seed: int, steps: int,
                overrides: Sequence[tuple[str, Any]] = ()) -> ml_collections.ConfigDict:
  """configs/synthetic.py + the variant's change + overrides, evaluated only at the end."""
  config = synthetic.get_config()
  config.seed = seed
  config.num_train_steps = steps
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  config.log_every_steps = min(config.log_every_steps, steps)
  for key, value in list(VARIANTS[variant].items()) + list(overrides):
    apply_override(config, key, value)
  return config


def video_top1(outputs: dict[str, dict[str, np.ndarray]], split: data.VideoSplit) -> float:
  """Fraction of videos (with ground truth) whose top action class of p' is a true class."""
  hits = []
  for i, video_id in enumerate(split.video_ids):
    true = {a['label'] for a in split.annotations(i)}
    if not true:
      continue
    probs = outputs[video_id]['video_probs'][:split.num_classes]  # action columns only
    hits.append(split.class_names[int(np.argmax(probs))] in true)
  return float(np.mean(hits))


def predict_final(config: ml_collections.ConfigDict, workdir: str):
  """Restores the latest checkpoint of `workdir` and predicts the eval split."""
  mesh = parallel.make_mesh()
  data_dir = train_loop.prepare_data_dir(config.data)
  split = data.load_split(data_dir, config.data.dataset, config.data.eval_split)
  target = train_step.init_state(config, split.num_classes, mesh)
  manager = checkpointing.create_manager(workdir, read_only=True)
  state = checkpointing.restore(manager, manager.latest_step(), target)
  _, eval_fn = train_step.jit_steps(config, mesh)
  return train_loop.predict(eval_fn, state, split, config, mesh), split


def average_over(tious: Sequence[float], maps: Sequence[float], lo: float, hi: float) -> float:
  picked = [m for t, m in zip(tious, maps) if lo - 1e-9 <= t <= hi + 1e-9]
  return float(np.mean(picked))


def run_one(variant: str, seed: int, steps: int, workdir: str,
            overrides: Sequence[tuple[str, Any]] = ()) -> dict[str, Any]:
  """Trains (or resumes / re-evaluates) one variant and seed; returns its row (fractions)."""
  config = make_config(variant, seed, steps, overrides)
  start = time.perf_counter()
  summary = train_loop.train_and_evaluate(config, workdir)
  train_s = time.perf_counter() - start
  outputs, split = predict_final(config, workdir)
  tious = [float(t) for t in summary['tiou_thresholds']]
  row = {
      'variant': variant, 'seed': seed, 'steps': int(summary['step']),
      'tiou_thresholds': tious, 'map': [float(m) for m in summary['map']],
      'top1': video_top1(outputs, split), 'wall_s': train_s, 'workdir': workdir,
  }
  for name, (lo, hi) in AVERAGES.items():
    row[f'avg_{name}'] = average_over(tious, row['map'], lo, hi)
  return row


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Mean and sample std over seeds of every metric, per variant (order of first appearance)."""
  out = {}
  for variant in dict.fromkeys(r['variant'] for r in rows):
    mine = [r for r in rows if r['variant'] == variant]
    stats = {}
    columns = {f'map@{t:g}': [r['map'][i] for r in mine]
               for i, t in enumerate(mine[0]['tiou_thresholds'])}
    columns.update({f'avg_{n}': [r[f'avg_{n}'] for r in mine] for n in AVERAGES})
    columns['top1'] = [r['top1'] for r in mine]
    for name, values in columns.items():
      values = np.asarray(values, np.float64)
      stats[name] = {'mean': float(values.mean()),
                     'std': float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    out[variant] = {'seeds': [r['seed'] for r in mine], 'stats': stats}
  return out


def markdown(summary: dict[str, dict[str, Any]], steps: int, command: str,
             overrides: Sequence[tuple[str, Any]]) -> str:
  first = next(iter(summary.values()))
  map_cols = [k for k in first['stats'] if k.startswith('map@')]
  cols = map_cols + [f'avg_{n}' for n in AVERAGES] + ['top1']
  heads = [f'mAP@{k[4:]}' for k in map_cols] + [f'avg {n}' for n in AVERAGES] + ['video top-1']
  lines = ['| variant | ' + ' | '.join(heads) + ' |',
           '| --- | ' + ' | '.join('---' for _ in heads) + ' |']
  for variant, entry in summary.items():
    cells = [f"{100 * entry['stats'][c]['mean']:.1f} ± {100 * entry['stats'][c]['std']:.1f}"
             for c in cols]
    lines.append(f'| {DESCRIPTIONS.get(variant, variant)} | ' + ' | '.join(cells) + ' |')
  seeds = sorted({s for e in summary.values() for s in e['seeds']})
  note = (f'Synthetic THUMOS-like preset (configs/synthetic.py, data seed 0, test split), '
          f'{steps} steps of batch 16, seeds {seeds}; mean ± sample std over seeds, in %. '
          'Video top-1: the top action class of the suppressed-branch video score is a '
          'ground-truth class.')
  if overrides:
    note += ' Overrides: ' + ', '.join(f'`{k}={v}`' for k, v in overrides) + '.'
  header = ['# Ablation: AUMN vs the BaS-Net baseline on synthetic data', '',
            'Generated by `benchmarks/ablation.py` (every run is `train_loop.train_and_evaluate`, '
            'the `train.py` path; each variant is one config change). What the numbers mean, '
            'how the defaults were chosen (on a separate validation dataset) and what we '
            'learned: docs/method.md §6.', '']
  return '\n'.join(header + [note, '', *lines, '', f'Command: `{command}`', ''])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  unknown = [v for v in FLAGS.variants if v not in VARIANTS]
  if unknown:
    raise app.UsageError(f'--variants: unknown {unknown}; known: {list(VARIANTS)}')
  overrides = parse_overrides(FLAGS.set)
  seeds = [int(s) for s in FLAGS.seeds]
  rows = []
  for variant in FLAGS.variants:
    for seed in seeds:
      workdir = os.path.join(FLAGS.workdir, variant, f'seed_{seed}')
      row = run_one(variant, seed, FLAGS.steps, workdir, overrides)
      rows.append(row)
      print(f"[ablation] {variant} seed {seed}: avg mAP 0.1:0.7 "
            f"{100 * row['avg_0.1:0.7']:.2f}, top-1 {100 * row['top1']:.1f} "
            f"({row['wall_s']:.0f} s)", flush=True)
  summary = summarize(rows)
  command = 'python benchmarks/ablation.py ' + ' '.join(sys.argv[1:])
  table = markdown(summary, FLAGS.steps, command, overrides)
  print(table)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'date': datetime.datetime.now().isoformat(timespec='seconds'),
                 'command': command, 'steps': FLAGS.steps, 'seeds': seeds,
                 'overrides': [[k, v] for k, v in overrides], 'runs': rows,
                 'summary': summary, 'jax_backend': jax.default_backend()}, f, indent=1)
  if FLAGS.markdown:
    with open(FLAGS.markdown, 'w') as f:
      f.write(table)


if __name__ == '__main__':
  define_flags()
  app.run(main)
