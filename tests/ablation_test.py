"""benchmarks/ablation.py: variants are config changes, and one tiny run goes end to end."""
import numpy as np

import conftest
from benchmarks import ablation


def test_variants_change_only_their_field():
  base = ablation.make_config('aumn', seed=3, steps=7)
  assert (base.seed, base.num_train_steps, base.eval_every_steps) == (3, 7, 7)
  for variant, changes in ablation.VARIANTS.items():
    config = ablation.make_config(variant, seed=3, steps=7)
    flat, flat_base = config.to_dict(), base.to_dict()
    differing = {f'{group}.{key}' for group, fields in flat.items() if isinstance(fields, dict)
                 for key in fields if fields[key] != flat_base[group][key]}
    assert differing == set(changes), variant


def test_summary_and_table_are_mean_and_sample_std():
  rows = [{'variant': 'mil', 'seed': s, 'tiou_thresholds': [0.1, 0.5], 'map': [m, m / 2],
           'avg_0.1:0.5': m, 'avg_0.3:0.7': m, 'avg_0.1:0.7': m, 'top1': 1.0}
          for s, m in ((0, 0.2), (1, 0.4))]
  summary = ablation.summarize(rows)
  stats = summary['mil']['stats']
  assert np.isclose(stats['map@0.1']['mean'], 0.3)
  assert np.isclose(stats['map@0.1']['std'], np.std([0.2, 0.4], ddof=1))
  table = ablation.markdown(summary, 5, 'cmd', [])
  assert '| BaS-Net baseline (`model.head=mil`) | 30.0 ± 14.1 | 15.0 ± 7.1 |' in table


def test_one_tiny_run_end_to_end(tiny_data_dir, tmp_path):
  c = conftest.tiny_config(tiny_data_dir)
  overrides = [(f'{group}.{key}', c[group][key]) for group in ('data', 'model')
               for key in c[group]] + [('batch_size', c.batch_size)]
  row = ablation.run_one('no_hom', seed=0, steps=2, workdir=str(tmp_path / 'w'),
                         overrides=overrides)
  assert row['steps'] == 2 and len(row['map']) == 7
  assert 0.0 <= row['top1'] <= 1.0
  assert np.isclose(row['avg_0.1:0.7'], np.mean(row['map']))
