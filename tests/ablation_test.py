"""benchmarks/ablation.py: variants are config changes, the table's statistics, video top-1.

The training path itself (train_loop.train_and_evaluate) is covered by train_test.py.
"""
import numpy as np

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


def test_video_top1_counts_a_hit_when_the_top_action_class_is_true():
  class Split:  # the three things video_top1 reads of a data.VideoSplit
    video_ids = ['a', 'b', 'c']
    class_names = ['x', 'y']
    num_classes = 2

    def annotations(self, i):
      return [[{'segment': [0, 1], 'label': 'x'}], [{'segment': [0, 1], 'label': 'y'}], []][i]

  # Background (last column) is ignored even when it is the largest; 'c' has no ground truth.
  outputs = {'a': {'video_probs': np.array([0.3, 0.1, 0.6])},
             'b': {'video_probs': np.array([0.5, 0.4, 0.1])},
             'c': {'video_probs': np.array([0.1, 0.8, 0.1])}}
  assert ablation.video_top1(outputs, Split()) == 0.5
