"""benchmarks/ablation.py: variants are config changes, the table's statistics.

The training path itself (train_loop.train_and_evaluate) is covered by train_test.py; the run
and its metrics by robustness_test.py.
"""
import json

from absl import app
import numpy as np
import pytest

from benchmarks import ablation
from benchmarks import robustness


def test_variants_change_only_their_field():
  base = robustness.make_config('small', 'aumn', seed=3, steps=7, eval_every=0, data_dir='/d')
  assert (base.seed, base.num_train_steps, base.eval_every_steps) == (3, 7, 7)
  for variant, changes in ablation.VARIANTS.items():
    head, rest = ablation.variant_overrides(variant)
    config = robustness.make_config('small', head, 3, 7, 0, '/d', rest)
    flat, flat_base = config.to_dict(), base.to_dict()
    differing = {f'{group}.{key}' for group, fields in flat.items() if isinstance(fields, dict)
                 for key in fields if fields[key] != flat_base[group][key]}
    assert differing == set(changes), variant
  assert ablation.variant_overrides('no_read') == ('aumn', [('loss.lambda_read', 0.0)])


def test_summary_and_table_are_mean_and_sample_std():
  rows = [{'regime': g, 'variant': v, 'seed': s, 'avg_0.1:0.7': m, 'top1': 1.0,
           'fg_auc': 0.5 + m, 'plateau_steps': 10 * s}
          for g in ('thumos', 'fewvideo') for v in ('mil', 'aumn')
          for s, m in ((0, 0.2), (1, 0.4))]
  rows = [r for r in rows if not (r['regime'] == 'fewvideo' and r['variant'] == 'aumn')]
  summary = ablation.summarize(rows)
  mean, std = summary['thumos']['mil']['avg_0.1:0.7']
  assert np.isclose(mean, 0.3) and np.isclose(std, np.std([0.2, 0.4], ddof=1))
  assert summary['thumos']['aumn']['seeds'] == [0, 1]
  table = ablation.markdown(summary, 5, 0, 'cmd', [])
  assert '| variant | thumos | fewvideo |' in table
  assert '| BaS-Net baseline (`model.head=mil`) | 30.0 ± 14.1 | 30.0 ± 14.1 |' in table
  assert '| AUMN, all mechanisms | 30.0 ± 14.1 | – |' in table     # a missing cell says so
  assert '| AUMN, all mechanisms | 0.800 ± 0.141 | – |' in table
  assert '| BaS-Net baseline (`model.head=mil`) | 5 ± 7 | 5 ± 7 |' in table  # plateau steps
  assert summary['thumos']['mil']['paired'] == (0.0, 0.0, 2)  # same numbers as aumn per seed
  assert summary['fewvideo']['mil']['paired'] is None  # no aumn runs in that regime
  assert summary['thumos']['aumn']['paired'] is None
  assert '| BaS-Net baseline (`model.head=mil`) | +0.0 ± 0.0 (n=2) | – |' in table


def test_the_paired_difference_cancels_what_a_seed_does_to_both_runs():
  """Seed luck shared by AUMN and a variant (±10 points) hides a 1-point effect in the
  unpaired mean ± std; the paired difference shows it. Only seeds both have count."""
  luck = {0: -0.10, 1: 0.0, 2: 0.10, 3: 0.5}  # (no AUMN run of seed 3 to pair with)
  rows = [{'regime': 'partial', 'variant': v, 'seed': s, 'avg_0.1:0.7': 0.4 + luck[s] + d,
           'top1': 1.0, 'fg_auc': 0.9, 'plateau_steps': 0}
          for v, d, seeds in (('aumn', 0.0, (0, 1, 2)), ('no_div', 0.01, (0, 1, 2)),
                              ('no_hom', -0.02, (1, 2, 3)))
          for s in seeds]
  summary = ablation.summarize(rows)
  mean, std = summary['partial']['no_div']['avg_0.1:0.7']
  assert std > 0.09  # the unpaired spread is the seeds' luck
  d_mean, d_std, n = summary['partial']['no_div']['paired']
  assert np.isclose(d_mean, 0.01) and d_std < 1e-9 and n == 3
  d_mean, _, n = summary['partial']['no_hom']['paired']
  assert np.isclose(d_mean, -0.02) and n == 2
  table = ablation.markdown(summary, 300, 0, 'cmd', [])
  assert '| AUMN, `loss.lambda_div=0` | +1.0 ± 0.0 (n=3) |' in table
  assert '| AUMN, `loss.lambda_hom=0` | -2.0 ± 0.0 (n=2) |' in table


def test_earlier_runs_join_the_table_unless_redone(tmp_path):
  """--include_json: runs of an earlier output join this invocation's unless it made the same
  run (regime, variant, seed) again; a file of other steps / data seed is refused; the table
  lists variants in VARIANTS order whatever order the runs came in."""
  row = lambda v, s, m: {'regime': 'partial', 'variant': v, 'seed': s, 'avg_0.1:0.7': m,
                         'top1': 1.0, 'fg_auc': 0.9, 'plateau_steps': 0}
  earlier = tmp_path / 'earlier.json'
  earlier.write_text(json.dumps({'steps': 300, 'data_seed': 0,
                                 'runs': [row('aumn', 0, 0.1), row('aumn', 1, 0.3)]}))
  mine = [row('mil', 0, 0.2), row('aumn', 1, 0.5)]
  key = lambda r: (r['regime'], r['variant'], r['seed'])
  got = robustness.include_runs(robustness.read_included([str(earlier)], 300, 0), mine, key)
  assert [(r['variant'], r['seed'], r['avg_0.1:0.7']) for r in got] == [
      ('aumn', 0, 0.1), ('mil', 0, 0.2), ('aumn', 1, 0.5)]
  with pytest.raises(app.UsageError, match=r'steps/data seed \(300, 0\) differ .*\(300, 1\)'):
    robustness.read_included([str(earlier)], 300, 1)
  (tmp_path / 'cut.json').write_text('{"steps": 300, "data_se')
  for path, problem in [(tmp_path / 'nope.json', 'No such file'),
                        (tmp_path / 'cut.json', 'not a --json output of this study')]:
    with pytest.raises(app.UsageError, match=f'--include_json={path}: {problem}'):
      robustness.read_included([str(path)], 300, 0)
  table = ablation.markdown(ablation.summarize(got), 300, 0, 'cmd', [])
  assert table.index('BaS-Net baseline') < table.index('AUMN, all mechanisms')
