"""The ablation study of SPEC.md §3 over the battery: the BaS-Net baseline, AUMN, and AUMN with
each mechanism off, on every regime of benchmarks/robustness.py.

Run:  python benchmarks/ablation.py [--regimes thumos,fewvideo,...] [--variants mil,aumn,...]
          [--seeds 0,1,2] [--steps 300] [--data_seed 0] [--workdir /tmp/aumn_robustness]
          [--json OUT] [--markdown docs/ablation.md] [--set KEY=VALUE ...]
          [--include_json EARLIER.json ...]

Every run is benchmarks/robustness.py's run (aumn_jax.train_loop.train_and_evaluate, the
train.py path; configs/synthetic.py's model, batch 16 x 300 snippets, evaluated at the end),
on the regime's dataset generated with --data_seed (default 0: the REPORTED battery; defaults
are chosen on data seed 1, never here). Variants are config changes only:
  mil       model.head='mil'                   BaS-Net baseline (one linear classifier)
  aumn      the defaults                       all mechanisms
  no_div    loss.lambda_div=0                  units need not differ
  no_hom    loss.lambda_hom=0                  claimed snippets need not be close to their unit
  no_read   loss.lambda_read=0                 no read-attention sparsity (L_sp's 2nd term)
  no_fg_l1  loss.lambda_sp=0                   no foreground L1 (L_sp's 1st term)
`--set KEY=VALUE` overrides the config of every variant.

A finished run is not retrained (robustness.py caches its rows in its workdir), so an
interrupted study continues where it stopped. Output: per-run lines; per regime and variant the
mean ± sample std (ddof=1) over seeds of avg mAP 0.1:0.7, video top-1, the foreground
attention's snippet AUC and its plateau steps (robustness.plateau_steps), and each variant's
avg mAP minus AUMN's paired by run seed (mean ± std of the per-seed differences: the seed's
own luck, shared by both runs, cancels), printed, in --json and as markdown in --markdown.
"""
import os
import sys
from typing import Any, Sequence

from absl import app
from absl import flags


# pylint: disable=g-import-not-at-top,wrong-import-position

from aumn_jax import cli
from benchmarks import robustness
# pylint: enable=g-import-not-at-top,wrong-import-position

VARIANTS = {
    'mil': {'model.head': 'mil'},
    'aumn': {},
    'no_div': {'loss.lambda_div': 0.0},
    'no_hom': {'loss.lambda_hom': 0.0},
    'no_read': {'loss.lambda_read': 0.0},
    'no_fg_l1': {'loss.lambda_sp': 0.0},
}
DESCRIPTIONS = {
    'mil': 'BaS-Net baseline (`model.head=mil`)',
    'aumn': 'AUMN, all mechanisms',
    'no_div': 'AUMN, `loss.lambda_div=0`',
    'no_hom': 'AUMN, `loss.lambda_hom=0`',
    'no_read': 'AUMN, `loss.lambda_read=0` (no read-attention sparsity)',
    'no_fg_l1': 'AUMN, `loss.lambda_sp=0` (no foreground L1)',
}
METRICS = {  # row key -> (table title, scale, cell format)
    'avg_0.1:0.7': ('avg mAP 0.1:0.7 (%)', 100.0, '{:.1f} ± {:.1f}'),
    'top1': ('video top-1 (%)', 100.0, '{:.1f} ± {:.1f}'),
    'fg_auc': ('AUC(a)', 1.0, '{:.3f} ± {:.3f}'),
    'plateau_steps': ('plateau steps (logged steps >= 20 with mean a outside [0.05, 0.95])',
                      1.0, '{:.0f} ± {:.0f}'),
}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a script: importing this module (tests do)
  must not claim names such as --workdir that evaluate.py defines too."""
  flags.DEFINE_list('regimes', ['thumos', 'fewvideo'], f'Subset of {list(robustness.REGIMES)}.')
  flags.DEFINE_list('variants', list(VARIANTS), f'Subset of {list(VARIANTS)}.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Run seeds (config.seed).')
  flags.DEFINE_integer('steps', 300, 'Training steps per run (evaluated once, at the end).',
                       lower_bound=1)
  flags.DEFINE_integer('data_seed', 0, 'Generator seed of every regime (0: the reported one).',
                       lower_bound=0)
  flags.DEFINE_string('workdir', '/tmp/aumn_robustness',
                      "Datasets and one dir per run (robustness.py's default: runs are shared).")
  flags.DEFINE_string('json', None, 'Write every run and the summary here.')
  flags.DEFINE_string('markdown', None, 'Write the markdown table here (e.g. docs/ablation.md).')
  flags.DEFINE_multi_string('set', [], 'KEY=VALUE config override applied to every variant.')
  flags.DEFINE_multi_string('include_json', [], 'Earlier --json outputs whose runs join the '
                            'table (e.g. variants run with other seed programs); same steps and '
                            'data seed.')


def variant_overrides(variant: str) -> tuple[str, list[tuple[str, Any]]]:
  """(model.head, the other overrides) of a variant."""
  changes = dict(VARIANTS[variant])
  return changes.pop('model.head', 'aumn'), list(changes.items())


PAIRED = 'avg_0.1:0.7'  # the metric of the paired table


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
  """{regime: {variant: {'seeds', metric: (mean, sample std), 'paired': ...}}} in order of
  appearance. 'paired': (mean, sample std, n) over the run seeds both this variant and `aumn`
  have of (this variant's avg mAP − AUMN's), or None without such a seed. Runs of one seed
  share the data order (and, between AUMN variants, the initialisation), so the seed-to-seed
  spread that both share cancels in the difference."""
  out = {}
  for r in rows:
    out.setdefault(r['regime'], {}).setdefault(r['variant'], []).append(r)
  for regime, variants in out.items():
    reference = {r['seed']: r[PAIRED] for r in variants.get('aumn', [])}
    for variant, mine in variants.items():
      entry = {'seeds': [r['seed'] for r in mine]}
      for key in METRICS:
        entry[key] = robustness.mean_std([r[key] for r in mine])
      deltas = [r[PAIRED] - reference[r['seed']] for r in mine if r['seed'] in reference]
      entry['paired'] = ((*robustness.mean_std(deltas), len(deltas))
                         if deltas and variant != 'aumn' else None)
      variants[variant] = entry
  return out


def markdown(summary: dict[str, dict[str, dict[str, Any]]], steps: int, data_seed: int,
             command: str, overrides: Sequence[tuple[str, Any]]) -> str:
  """One table per metric: a row per variant, a column per regime, mean ± std over seeds."""
  regimes = list(summary)
  seen = dict.fromkeys(v for r in regimes for v in summary[r])
  variants = [v for v in VARIANTS if v in seen] + [v for v in seen if v not in VARIANTS]
  seeds = sorted({s for r in regimes for e in summary[r].values() for s in e['seeds']})
  note = (f'{steps} steps of batch 16 × 300 snippets (configs/synthetic.py model), run seeds '
          f'{seeds}, data seed {data_seed}; mean ± sample std over seeds. Video top-1: the top '
          'action class of the suppressed-branch video score is a ground-truth class. AUC(a): '
          "the foreground attention's snippet ROC AUC against the ground truth.")
  if overrides:
    note += ' Overrides: ' + ', '.join(f'`{k}={v}`' for k, v in overrides) + '.'
  lines = ['# Ablation: AUMN vs the BaS-Net baseline over the battery', '',
           'Generated by `benchmarks/ablation.py` (every run is `train_loop.train_and_evaluate`, '
           'the `train.py` path; each variant is one config change; the regimes: '
           '[docs/method.md §7](method.md)).', '', note, '']
  for key, (title, scale, fmt) in METRICS.items():
    lines += [f'### {title}', '', '| variant | ' + ' | '.join(regimes) + ' |',
              '| --- | ' + ' | '.join('---' for _ in regimes) + ' |']
    for variant in variants:
      cells = []
      for regime in regimes:
        entry = summary[regime].get(variant)
        cells.append('–' if entry is None else
                     fmt.format(scale * entry[key][0], scale * entry[key][1]))
      lines.append(f'| {DESCRIPTIONS.get(variant, variant)} | ' + ' | '.join(cells) + ' |')
    lines.append('')
  title, scale, _ = METRICS[PAIRED]
  lines += [f'### {title}: the variant minus AUMN, paired by run seed', '',
            'Mean ± sample std over the seeds both have of the per-seed difference (points); '
            'a difference larger than its std in every regime is an effect, not seed noise.',
            '', '| variant | ' + ' | '.join(regimes) + ' |',
            '| --- | ' + ' | '.join('---' for _ in regimes) + ' |']
  for variant in variants:
    if variant == 'aumn':
      continue
    cells = []
    for regime in regimes:
      paired = (summary[regime].get(variant) or {}).get('paired')
      cells.append('–' if paired is None else
                   f'{scale * paired[0]:+.1f} ± {scale * paired[1]:.1f} (n={paired[2]})')
    lines.append(f'| {DESCRIPTIONS.get(variant, variant)} | ' + ' | '.join(cells) + ' |')
  lines.append('')
  return '\n'.join(lines + [f'Command: `{command}`', ''])


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name, values, known in (('variants', FLAGS.variants, VARIANTS),
                              ('regimes', FLAGS.regimes, robustness.REGIMES)):
    bad = [v for v in values if v not in known]
    if bad:
      raise app.UsageError(f'--{name}: unknown {bad}; known: {list(known)}')
  overrides = robustness.parse_overrides(FLAGS.set)
  run_seeds = robustness.seed_list(FLAGS.seeds)
  cli.check_output_paths(json=FLAGS.json, markdown=FLAGS.markdown)
  included = robustness.read_included(FLAGS.include_json, FLAGS.steps, FLAGS.data_seed)
  rows = []
  for regime in FLAGS.regimes:
    regime_dir = robustness.prepare_regime(regime, FLAGS.data_seed, FLAGS.workdir)
    for variant in FLAGS.variants:
      head, changes = variant_overrides(variant)
      for seeds in robustness.consecutive(run_seeds):
        # robustness.py's layout: with the same --workdir, its mil / aumn runs are these
        # variants' runs (same config, cached rows), trained once; a stretch of consecutive
        # seeds is one program (config.num_seeds).
        workdir = os.path.join(FLAGS.workdir, 'runs', f'{regime}_seed{FLAGS.data_seed}',
                               'small', variant, robustness.program_dir(seeds))
        for row in robustness.run_seeds(regime, 'small', head, seeds, FLAGS.steps, 0,
                                        regime_dir, workdir, changes + overrides):
          row = {**row, 'variant': variant}
          rows.append(row)
          print(f"[ablation] {regime} {variant} seed {row['seed']}: avg mAP 0.1:0.7 "
                f"{100 * row['avg_0.1:0.7']:.2f}, top-1 {100 * row['top1']:.1f}, "
                f"AUC(a) {row['fg_auc']:.3f}, plateau {row['plateau_steps']} "
                f"({row['wall_s']:.0f} s per seed)", flush=True)
  rows = robustness.include_runs(included, rows, lambda r: (r['regime'], r['variant'], r['seed']))
  summary = summarize(rows)
  command = 'python benchmarks/ablation.py ' + ' '.join(sys.argv[1:])
  table = markdown(summary, FLAGS.steps, FLAGS.data_seed, command, overrides)
  print(table)
  robustness.write_outputs(FLAGS.json, FLAGS.markdown, table, {
      'command': command, 'steps': FLAGS.steps, 'data_seed': FLAGS.data_seed,
      'overrides': [[k, v] for k, v in overrides], 'runs': rows, 'summary': summary})


if __name__ == '__main__':
  define_flags()
  cli.run(main)
