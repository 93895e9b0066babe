"""Training on data it was never tuned on: both heads, both model sizes, a battery of regimes.

Run:  python benchmarks/robustness.py [--regimes thumos,fewvideo,partial,fewvideo_partial,
          activitynet]
          [--heads mil,aumn] [--models small,thumos] [--seeds 0,1,2] [--data_seed 1]
          [--steps 300] [--eval_every 0] [--workdir /tmp/aumn_robustness]
          [--json OUT] [--markdown OUT.md] [--set KEY=VALUE ...]

The battery (data_prep.synthetic presets; docs/method.md §7 says what each resembles):
  thumos       the project's own THUMOS-like preset (200 / 212 videos)
  fewvideo     the real THUMOS14 gt.json (--annotations), 60 / 40 videos, <= 300-snippet clips
  partial      action units differ only partly from the scene, per-video gains, no norm cue
  fewvideo_partial  fewvideo's videos with partial's features
  activitynet  100 classes, 1-3 long instances per video
Each regime is generated with --data_seed (default 1: the VALIDATION battery, where defaults
are chosen; report on another data seed), then built with data_prep.build — the path real dumps
take — once, under WORKDIR/data/.

Models:
  small   configs/synthetic.py's model (D 256, L 16, lr 3e-4)
  thumos  configs/thumos.py's model (D 2048, L 64, lr 1e-4)
Every run: batch 16, max_snippets 300, --steps steps, `seed` = the run seed, trained by
aumn_jax.train_loop.train_and_evaluate (the train.py path), evaluated every --eval_every steps
(0: only at the end). The seeds of a (regime, model, head) are one program (config.num_seeds;
each consecutive stretch of --seeds one program, e.g. 0,1,2 -> seed 0 with num_seeds 3), which
computes what separate runs of those seeds compute. Reported per seed, then mean ± sample std
over seeds:
  avg mAP 0.1:0.7 (every regime, the ActivityNet-like one too: one scale across the table)
  top-1     test videos whose top action class of p' is a true class
  AUC(a)    snippet-level ROC AUC of the foreground attention against the ground truth
            (a snippet is action when an instance covers half of it), over all test snippets
  plateau   logged training steps >= 20 with mean a < 0.05 or > 0.95, times the log interval
            (metrics.jsonl `diag_fg_mean`, logged every 10 steps)
With --eval_every below --steps, a second table gives avg mAP and AUC(a) at each evaluation
(both from metrics.jsonl's evaluation lines, `average_map` and `fg_auc`).
A finished program is not retrained (its workdir is reused; its rows are cached in the
workdir's robustness_rows.json, keyed by the whole config), so an interrupted battery continues.
"""
import dataclasses
import datetime
import json
import os
import shutil
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import ml_collections
import numpy as np

from aumn_jax import checkpointing
from aumn_jax import cli
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import eval_loop
from aumn_jax import localization
from aumn_jax import parallel
from aumn_jax import plotting
from aumn_jax import train_loop
from aumn_jax import train_step
from configs import synthetic as synthetic_config
from configs import thumos as thumos_config
from data_prep import build as build_lib
from data_prep import synthetic
# pylint: enable=g-import-not-at-top,wrong-import-position

THUMOS_GT = os.path.join(os.path.dirname(_REPO), 'shared', 'data', 'thumos14_um', 'gt.json')
_PARTIAL = dataclasses.asdict(synthetic.PARTIAL_FEATURES)
REGIMES = {  # name -> (data_prep.synthetic preset, annotation file or None, feature overrides)
    'thumos': ('thumos', None, {}),
    'fewvideo': ('fewvideo', THUMOS_GT, {}),
    'partial': ('partial', None, {}),
    'fewvideo_partial': ('fewvideo', THUMOS_GT, _PARTIAL),
    'activitynet': ('activitynet', None, {}),
}
MODELS = ('small', 'thumos')
LOG_EVERY = 10
ROW_FILE = 'robustness_rows.json'
PLATEAU_FROM = 20
FG_LOW, FG_HIGH = 0.05, 0.95

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_list('regimes', list(REGIMES), f'Subset of {list(REGIMES)}.')
  flags.DEFINE_list('heads', ['mil', 'aumn'], 'model.head values.')
  flags.DEFINE_list('models', ['small'], f'Subset of {list(MODELS)}.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Run seeds (config.seed).')
  flags.DEFINE_integer('data_seed', 1, 'Generator seed of every regime (1: validation).',
                       lower_bound=0)
  flags.DEFINE_integer('steps', 300, 'Training steps per run.')
  flags.DEFINE_integer('eval_every', 0, 'Evaluate every N steps as well (0: at the end only).')
  flags.DEFINE_string('workdir', '/tmp/aumn_robustness', 'Datasets and one dir per run.')
  flags.DEFINE_string('json', None, 'Write every run and the summary here.')
  flags.DEFINE_string('markdown', None, 'Write the markdown table here.')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE config override applied to every run.')
  flags.DEFINE_list('scores', [], 'Also score every run\'s final checkpoint with these '
                    f'localization.score values (of {list(localization.SCORES)}): one column '
                    'each, avg mAP 0.1:0.7; finished runs are re-localized, not retrained.')
  flags.DEFINE_multi_string('include_json', [], 'Earlier --json outputs whose runs join the '
                            'table (e.g. more seeds of some regimes); same steps and data seed.')


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
    if name not in node:
      raise app.UsageError(f'--set {key}: config has no field {key!r}')
    node = node[name]
  if leaf not in node:
    raise app.UsageError(f'--set {key}: config has no field {key!r}')
  if isinstance(node[leaf], tuple) and isinstance(value, list):
    value = tuple(value)
  try:
    node[leaf] = value
  except TypeError as e:  # e.g. a bool field given 'True' (JSON spells it true)
    raise app.UsageError(f'--set {key}={value!r}: {type(node[leaf]).__name__} expected, got '
                         f'{type(value).__name__} (values are JSON: true, 0.5, "text")') from e


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
  """Restores the latest checkpoint of `workdir` and predicts the eval split: ([per seed
  {video_id: outputs}], split)."""
  mesh = parallel.make_mesh(num_seeds=config.num_seeds)
  split = data.load_split(config.data.data_dir, config.data.dataset, config.data.eval_split)
  target = train_step.init_state(config, split.num_classes, mesh)
  manager = checkpointing.create_manager(workdir, read_only=True)
  state = checkpointing.restore(manager, manager.latest_step(), target)
  _, eval_fn = train_step.jit_steps(config, mesh)
  return eval_loop.predict(eval_fn, state, split, config, mesh), split


def average_over(tious: Sequence[float], maps: Sequence[float], lo: float, hi: float) -> float:
  picked = [m for t, m in zip(tious, maps) if lo - 1e-9 <= t <= hi + 1e-9]
  return float(np.mean(picked))


def prepare_regime(regime: str, data_seed: int, root: str) -> str:
  """Generates and builds one regime once; returns its TFDS data_dir."""
  data_dir = os.path.join(root, 'data', f'{regime}_seed{data_seed}')
  if os.path.exists(os.path.join(data_dir, '.done')):
    return data_dir
  preset, annotations, overrides = REGIMES[regime]
  if annotations is not None and not os.path.exists(annotations):
    raise data.DataError(f'{annotations}: missing; the {regime!r} regime is built on this real '
                         'THUMOS14 gt.json (the repository\'s sibling shared/data/)')
  raw = os.path.join(root, 'data', f'{regime}_seed{data_seed}_raw')
  shutil.rmtree(raw, ignore_errors=True)
  shutil.rmtree(data_dir, ignore_errors=True)
  synthetic.generate(raw, 'um', preset, seed=data_seed, annotations=annotations, log=print,
                     **overrides)
  build_lib.build('synthetic', raw, data_dir)
  shutil.rmtree(raw)
  open(os.path.join(data_dir, '.done'), 'w').close()
  return data_dir


def make_config(model: str, head: str, seed: int, steps: int, eval_every: int, data_dir: str,
                overrides: Sequence[tuple[str, Any]] = (), num_seeds: int = 1
                ) -> ml_collections.ConfigDict:
  base = synthetic_config if model == 'small' else thumos_config
  config = base.get_config()
  config.data.dataset = 'synthetic'
  config.data.data_dir = data_dir
  config.data.max_snippets = 300
  config.data.eval_buckets = (256, 512, 1024, 2048, 4096)
  config.data.eval_batch_size = 16
  config.batch_size = 16
  config.model.head = head
  config.seed = seed
  config.num_seeds = num_seeds
  config.num_train_steps = steps
  config.eval_every_steps = eval_every or steps
  config.checkpoint_every_steps = config.eval_every_steps
  config.log_every_steps = LOG_EVERY
  config.evaluation.num_plots = 0
  for key, value in overrides:
    apply_override(config, key, value)
  return config


def unit_specificity(usage: np.ndarray) -> dict[str, float]:
  """Two numbers of a class x unit usage matrix (plotting.class_unit_usage; last row the
  background), both normalised entropies in [0, 1]:
    class_spread  mean over action classes of H(row) / log L: 1 = a class reads every unit
                  alike (one averaged classifier), low = few units per class;
    unit_sharing  mean over units of H(column over action classes) / log C, weighted by the
                  unit's total use: 1 = every unit serves every class alike (units carry no
                  class meaning), low = class-specific units.
  """
  actions = usage[:-1]
  num_classes, num_units = actions.shape
  h = lambda p, axis: -np.sum(p * np.log(np.maximum(p, 1e-30)), axis=axis)
  rows = actions / np.maximum(actions.sum(axis=1, keepdims=True), 1e-30)
  cols = actions / np.maximum(actions.sum(axis=0, keepdims=True), 1e-30)
  weight = actions.sum(axis=0) / max(actions.sum(), 1e-30)
  return {'class_spread': float(np.mean(h(rows, 1)) / np.log(num_units)),
          'unit_sharing': float(np.sum(weight * h(cols, 0)) / np.log(num_classes))}


def read_curves(workdir: str, index: int = 0
                ) -> tuple[list[tuple[int, float]], list[tuple[int, float, float | None]]]:
  """(step, mean a) of every logged training line and (step, average mAP, AUC(a)) of every
  eval, of the run's `index`-th seed (AUC(a) None in logs written before it was logged)."""
  trace, evals = [], []
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    for row in map(json.loads, f):
      if 'per_seed' in row:
        row = {'step': row['step'], **row['per_seed'][index]}
      if 'diag_fg_mean' in row:
        trace.append((int(row['step']), float(row['diag_fg_mean'])))
      if 'average_map' in row:
        evals.append((int(row['step']), float(row['average_map']), row.get('fg_auc')))
  return trace, evals


def plateau_steps(trace: Sequence[tuple[int, float]]) -> int:
  """Training steps (from step PLATEAU_FROM on) whose logged mean a is outside the band; a
  logged line stands for the steps since the previous one (it is their mean)."""
  total, previous = 0, 0
  for step, a in trace:
    if step >= PLATEAU_FROM and not FG_LOW <= a <= FG_HIGH:
      total += step - max(previous, PLATEAU_FROM - LOG_EVERY)
    previous = step
  return total


def score_by_localization(rows, config, workdir, scores, outputs=None, split=None):
  """Adds row['avg_by_score'][s] to each seed's row: avg mAP 0.1:0.7 of the final checkpoint
  localized with `localization.score = s`, for each s of `scores` not there yet (one
  prediction of all seeds, then only localization and evaluation per score). Returns whether
  anything was added."""
  missing = [s for s in scores if any(s not in r.get('avg_by_score', {}) for r in rows)]
  if not missing:
    return False
  if outputs is None:
    outputs, split = predict_final(config, workdir)
  for row, seed_outputs in zip(rows, outputs):
    by_score = row.setdefault('avg_by_score', {})
    for score in missing:
      variant = config.copy_and_resolve_references()
      variant.localization.score = score
      _, scored = eval_loop.localize_and_evaluate(seed_outputs, split, variant)
      by_score[score] = average_over([float(t) for t in scored.tiou_thresholds],
                                     [float(m) for m in scored.map], 0.1, 0.7)
  return True


def _write_rows(path, rows):
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(rows, f)


def program_dir(seeds: Sequence[int]) -> str:
  """The workdir name of one program: seed_3 or seeds_0-2."""
  return f'seed_{seeds[0]}' if len(seeds) == 1 else f'seeds_{seeds[0]}-{seeds[-1]}'


def consecutive(seeds: Sequence[int]) -> list[list[int]]:
  """[0, 1, 2, 5] -> [[0, 1, 2], [5]]: each stretch is one program (seed, num_seeds)."""
  groups: list[list[int]] = []
  for seed in seeds:
    if groups and seed == groups[-1][-1] + 1:
      groups[-1].append(seed)
    else:
      groups.append([seed])
  return groups


def run_seeds(regime, model, head, seeds, steps, eval_every, data_dir, workdir, overrides,
              scores=()):
  """Trains seeds `seeds` (consecutive) as one program; returns one row per seed."""
  config = make_config(model, head, seeds[0], steps, eval_every, data_dir, overrides,
                       num_seeds=len(seeds))
  cached = os.path.join(workdir, ROW_FILE)
  if os.path.exists(cached):  # a finished run of this very config: its rows, not a re-eval
    with open(cached, encoding='utf-8') as f:
      rows = json.load(f)
    if rows and all(r.get('config') == config.to_json() for r in rows):
      if score_by_localization(rows, config, workdir, scores):
        _write_rows(cached, rows)
      return rows
  start = time.perf_counter()
  summary = train_loop.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - start
  if summary.get('preempted'):  # SIGTERM / Ctrl-C: a checkpoint at that step, no results
    raise errors.TrainingError(
        f'{workdir}: stopped by {summary["signal"]} at step {summary["step"]} of {steps} (its '
        'checkpoint is saved); rerun the same command to resume it (finished runs are read '
        'back, not retrained)')
  outputs, split = predict_final(config, workdir)
  per_seed = summary.get('per_seed', [{'seed': seeds[0], 'map': summary['map']}])
  tious = [float(t) for t in summary['tiou_thresholds']]
  rows = []
  for index, (seed, entry, seed_outputs) in enumerate(zip(seeds, per_seed, outputs)):
    maps = [float(m) for m in entry['map']]
    trace, evals = read_curves(workdir, index)
    after = [a for s, a in trace if s >= PLATEAU_FROM]
    row = {
        'regime': regime, 'model': model, 'head': head, 'seed': seed, 'steps': steps,
        'tiou_thresholds': tious, 'map': maps, 'average_map': float(np.mean(maps)),
        'avg_0.1:0.7': average_over(tious, maps, 0.1, 0.7),
        'top1': video_top1(seed_outputs, split),
        'fg_auc': eval_loop.attention_auc(seed_outputs, split),
        'plateau_steps': plateau_steps(trace),
        'fg_min': min(after) if after else None, 'fg_max': max(after) if after else None,
        'fg_trace': trace, 'eval_curve': evals, 'wall_s': wall / len(seeds),
        'program_seeds': seeds, 'workdir': workdir, 'config': config.to_json(),
    }
    if head == 'aumn':
      row.update(unit_specificity(plotting.class_unit_usage(seed_outputs, split)[0]))
    rows.append(row)
  score_by_localization(rows, config, workdir, scores, outputs, split)
  _write_rows(cached, rows)
  return rows


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """(mean, sample std with ddof 1; 0 for a single value): the tables' mean ± std."""
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(rows):
  groups = {}
  for r in rows:
    groups.setdefault((r['regime'], r['model'], r['head']), []).append(r)
  out = []
  for (regime, model, head), mine in groups.items():
    stat = lambda k: mean_std([r[k] for r in mine])  # pylint: disable=cell-var-from-loop
    out.append({'regime': regime, 'model': model, 'head': head,
                'seeds': [r['seed'] for r in mine], 'map': stat('avg_0.1:0.7'),
                'top1': stat('top1'), 'fg_auc': stat('fg_auc'),
                'plateau_steps': stat('plateau_steps'),
                'fg_min': min(r['fg_min'] for r in mine), 'fg_max': max(r['fg_max'] for r in mine),
                'by_score': {score: mean_std([r['avg_by_score'][score] for r in mine])
                             for score in scores_of(mine)},
                'curve': eval_curve(mine)})
  return out


def eval_curve(rows) -> list[dict[str, Any]]:
  """Mean ± std over `rows` (one per seed) of avg mAP and AUC(a) at each evaluation step
  every row logged with both (rows from before AUC(a) was logged have none)."""
  by_seed = [{e[0]: e[1:] for e in r.get('eval_curve', []) if len(e) > 2 and e[2] is not None}
             for r in rows]
  steps = sorted(set.intersection(*(set(c) for c in by_seed))) if by_seed else []
  return [{'step': step, 'map': mean_std([c[step][0] for c in by_seed]),
           'fg_auc': mean_std([c[step][1] for c in by_seed])} for step in steps]


def scores_of(rows) -> list[str]:
  """The localization.score variants every one of `rows` was scored with, in a fixed order."""
  common = set.intersection(*(set(r.get('avg_by_score', {})) for r in rows)) if rows else set()
  return [s for s in localization.SCORES if s in common]


def markdown(summary, steps, data_seed, command, overrides) -> str:
  scores = [x for x in localization.SCORES
            if summary and all(x in s['by_score'] for s in summary)]
  lines = ['| regime | model | head | seeds | avg mAP 0.1:0.7 | video top-1 | AUC(a) '
           '| plateau steps | mean a range (steps ≥ 20) |'
           + ''.join(f' score={x} |' for x in scores),
           '| --- | --- | --- | --- | --- | --- | --- | --- | --- |' + ' --- |' * len(scores)]
  pct = lambda ms: f'{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}'
  for s in summary:
    lines.append(f"| {s['regime']} | {s['model']} | {s['head']} | "
                 f"{','.join(map(str, s['seeds']))} | {pct(s['map'])} | "
                 f"{pct(s['top1'])} | {s['fg_auc'][0]:.3f} ± {s['fg_auc'][1]:.3f} | "
                 f"{s['plateau_steps'][0]:.0f} ± {s['plateau_steps'][1]:.0f} | "
                 f"{s['fg_min']:.3f} – {s['fg_max']:.3f} |"
                 + ''.join(f' {pct(s["by_score"][x])} |' for x in scores))
  steps_seen = sorted({c['step'] for s in summary for c in s.get('curve', [])})
  if len(steps_seen) > 1:  # --eval_every: the evaluations during training too
    lines += ['', 'At each evaluation (avg mAP 0.1:0.7 % / AUC(a), mean ± std over seeds):', '',
              '| regime | model | head |' + ''.join(f' step {t} |' for t in steps_seen),
              '| --- | --- | --- |' + ' --- |' * len(steps_seen)]
    for s in summary:
      at = {c['step']: c for c in s.get('curve', [])}
      lines.append(f"| {s['regime']} | {s['model']} | {s['head']} |" + ''.join(
          f" {pct(at[t]['map'])} / {at[t]['fg_auc'][0]:.3f} ± {at[t]['fg_auc'][1]:.3f} |"
          if t in at else ' – |' for t in steps_seen))
  seeds = sorted({x for s in summary for x in s['seeds']})
  note = (f'{steps} steps of batch 16 × 300 snippets, run seeds {seeds}, data seed {data_seed}'
          f"{' (validation battery)' if data_seed == 1 else ''}; mean ± sample std over seeds "
          '(mAP and top-1 in %).')
  if overrides:
    note += ' Overrides: ' + ', '.join(f'`{k}={v}`' for k, v in overrides) + '.'
  return '\n'.join([note, '', *lines, '', f'Command: `{command}`', ''])


def write_outputs(json_path: str | None, markdown_path: str | None, table: str,
                  record: dict[str, Any]) -> None:
  """A study's --json (the record, dated, with the JAX backend) and --markdown (the table),
  each only where its path is given."""
  if json_path:
    with open(json_path, 'w', encoding='utf-8') as f:
      json.dump({'date': datetime.datetime.now().isoformat(timespec='seconds'), **record,
                 'jax_backend': jax.default_backend()}, f, indent=1)
  if markdown_path:
    with open(markdown_path, 'w', encoding='utf-8') as f:
      f.write(table)


def read_included(paths: Sequence[str], steps: int, data_seed: int) -> list[dict[str, Any]]:
  """--include_json: the runs of earlier --json outputs (read before any run starts, so a
  missing file or one from another setting is refused at once), in the order given."""
  runs = []
  for path in paths:
    try:
      with open(path, encoding='utf-8') as f:
        earlier = json.load(f)
      setting = (earlier['steps'], earlier['data_seed'])
      runs += list(earlier['runs'])
    except OSError as e:
      raise app.UsageError(f'--include_json={path}: {e.strerror}') from None
    except (ValueError, KeyError, TypeError) as e:
      raise app.UsageError(f'--include_json={path}: not a --json output of this study '
                           f'({type(e).__name__}: {e})') from None
    if setting != (steps, data_seed):
      raise app.UsageError(f'--include_json={path}: steps/data seed {setting} differ from this '
                           f'run ({steps}, {data_seed})')
  return runs


def include_runs(included: list[dict[str, Any]], rows: list[dict[str, Any]],
                 key) -> list[dict[str, Any]]:
  """The `included` runs (read_included) that this invocation did not make (`key(row)`
  identifies a run), then `rows`."""
  mine = {key(r) for r in rows}
  return [r for r in included if key(r) not in mine] + rows


def seed_list(values: Sequence[str], name: str = 'seeds') -> list[int]:
  """A --seeds list as distinct integers >= 0 (one line naming the flag otherwise)."""
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = []
  if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
    raise app.UsageError(f'--{name}={",".join(values)}: expected distinct integers >= 0')
  return seeds


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name, values, known in (('regimes', FLAGS.regimes, REGIMES), ('models', FLAGS.models,
                                                                    MODELS)):
    bad = [v for v in values if v not in known]
    if bad:
      raise app.UsageError(f'--{name}: unknown {bad}; known: {list(known)}')
  bad = [v for v in FLAGS.scores if v not in localization.SCORES]
  if bad:
    raise app.UsageError(f'--scores: unknown {bad}; known: {list(localization.SCORES)}')
  if FLAGS.steps < PLATEAU_FROM:
    raise app.UsageError(f'--steps={FLAGS.steps}: at least {PLATEAU_FROM} (the plateau window)')
  overrides = parse_overrides(FLAGS.set)
  run_seeds_ = seed_list(FLAGS.seeds)
  cli.check_output_paths(json=FLAGS.json, markdown=FLAGS.markdown)
  included = read_included(FLAGS.include_json, FLAGS.steps, FLAGS.data_seed)
  rows = []
  for regime in FLAGS.regimes:
    data_dir = prepare_regime(regime, FLAGS.data_seed, FLAGS.workdir)
    for model in FLAGS.models:
      for head in FLAGS.heads:
        for seeds in consecutive(run_seeds_):
          workdir = os.path.join(FLAGS.workdir, 'runs', f'{regime}_seed{FLAGS.data_seed}',
                                 model, head, program_dir(seeds))
          for row in run_seeds(regime, model, head, seeds, FLAGS.steps, FLAGS.eval_every,
                               data_dir, workdir, overrides, FLAGS.scores):
            rows.append(row)
            print(f"[robustness] {regime} {model} {head} seed {row['seed']}: avg mAP 0.1:0.7 "
                  f"{100 * row['avg_0.1:0.7']:.2f}, top-1 {100 * row['top1']:.1f}, "
                  f"AUC(a) {row['fg_auc']:.3f}, plateau {row['plateau_steps']}, "
                  f"a in [{row['fg_min']:.3f}, {row['fg_max']:.3f}] "
                  f"({row['wall_s']:.0f} s per seed)", flush=True)
  rows = include_runs(included, rows, lambda r: (r['regime'], r['model'], r['head'], r['seed']))
  summary = summarize(rows)
  command = 'python benchmarks/robustness.py ' + ' '.join(sys.argv[1:])
  table = markdown(summary, FLAGS.steps, FLAGS.data_seed, command, overrides)
  print(table)
  write_outputs(FLAGS.json, FLAGS.markdown, table, {
      'command': command, 'steps': FLAGS.steps, 'data_seed': FLAGS.data_seed,
      'overrides': [[k, v] for k, v in overrides], 'runs': rows, 'summary': summary})


if __name__ == '__main__':
  define_flags()
  cli.run(main)
