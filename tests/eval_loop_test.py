"""eval_loop's attention AUC and the seeds' summary against independent computations."""
import numpy as np
import pytest

import conftest
from aumn_jax import eval_loop


def test_roc_auc_equals_the_pairwise_definition_with_ties():
  rng = np.random.default_rng(0)
  for _ in range(20):
    n = int(rng.integers(2, 60))
    scores = rng.integers(0, 6, n).astype(np.float64)   # many ties
    positive = rng.random(n) < 0.4
    if positive.all() or not positive.any():
      continue
    np.testing.assert_allclose(eval_loop.roc_auc(scores, positive),
                               conftest.pairwise_auc(scores, positive), rtol=1e-12)
  assert np.isnan(eval_loop.roc_auc(np.ones(3), np.ones(3, bool)))


class _Split:
  """Two videos of 1-second snippets; instances given in snippets."""

  def __init__(self, instances):
    self.video_ids = list(instances)
    self._instances = list(instances.values())

  def snippet_classes(self, index, num_snippets):
    covered = np.zeros((num_snippets, 1), bool)
    for start, end in self._instances[index]:
      covered[start:end, 0] = True
    return covered


def test_attention_auc_pools_every_snippet_of_the_split():
  split = _Split({'v0': [(1, 3)], 'v1': []})
  outputs = {'v0': {'fg': np.array([0.1, 0.8, 0.6, 0.2])},   # action: snippets 1, 2
             'v1': {'fg': np.array([0.7, 0.05, 0.6])}}       # no action
  scores = np.array([0.1, 0.8, 0.6, 0.2, 0.7, 0.05, 0.6])
  positive = np.array([0, 1, 1, 0, 0, 0, 0], bool)
  # Pooled, not per video: v1's 0.7 outranks v0's action snippet 0.6.
  assert eval_loop.attention_auc(outputs, split) == pytest.approx(
      conftest.pairwise_auc(scores, positive))
  assert eval_loop.attention_auc(outputs, split) == pytest.approx((5 + 3.5) / 10)  # 0.6 ties 0.6
  assert eval_loop.attention_auc({'v1': outputs['v1']}, _Split({'v1': []})) is None


class _Scored:
  """What summarize reads of an evaluation.Evaluation."""

  def __init__(self, average):
    self.tiou_thresholds, self.map, self.average_map = (0.5,), np.array([average]), average

  def to_dict(self):
    return {'map': self.map.tolist(), 'average_map': self.average_map}


def test_summarize_reports_the_auc_per_seed_and_over_seeds():
  one = eval_loop.summarize([_Scored(0.4)], [3], [0.81])
  assert one['fg_auc'] == 0.81 and eval_loop.format_auc(one) == '0.810'
  many = eval_loop.summarize([_Scored(0.4), _Scored(0.5), _Scored(0.6)], [0, 1, 2],
                             [0.7, 0.8, 0.9])
  assert many['fg_auc'] == pytest.approx(0.8)
  assert many['fg_auc_std'] == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
  assert [e['fg_auc'] for e in many['per_seed']] == [0.7, 0.8, 0.9]
  assert eval_loop.format_auc(many) == '0.800 ± 0.100 over 3 seeds'
  undefined = eval_loop.summarize([_Scored(0.4), _Scored(0.5)], [0, 1], [0.7, None])
  assert undefined['fg_auc'] is None and undefined['fg_auc_std'] is None
  assert eval_loop.format_auc(undefined).startswith('undefined')
