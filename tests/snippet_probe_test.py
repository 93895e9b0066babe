"""benchmarks/snippet_probe.py: the probes fit what their form can express, and read snippets
and labels as the rest of the project does."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from aumn_jax import data
from benchmarks import snippet_probe


def _xor(n, rng):
  """Class = which of two units appears on which of two scenes, crossed (XOR): no linear
  classifier of x separates it; one hidden ReLU layer does."""
  unit, scene = rng.integers(0, 2, n), rng.integers(0, 2, n)
  x = np.zeros((n, 8), np.float32)
  x[np.arange(n), unit] = 3.0
  x[np.arange(n), 2 + scene] = 3.0
  x += 0.1 * rng.standard_normal(x.shape).astype(np.float32)
  return x, (unit ^ scene).astype(np.int32)


def test_a_hidden_layer_fits_xor_and_a_linear_probe_cannot():
  x, y = _xor(2048, np.random.default_rng(0))
  context = np.zeros_like(x)
  got = {}
  for kind in ('linear', 'mil', 'aumn'):
    params = snippet_probe.train_probe(kind, x, y, context, 3, seed=0, steps=400, dim=32,
                                       units=4)
    got[kind] = snippet_probe.accuracies(params, x, y, context, num_classes=3)['all']
  assert got['linear'] < 0.8, got   # at best 3 of the 4 cells
  assert got['mil'] > 0.97 and got['aumn'] > 0.97, got


def test_the_video_probe_reads_the_context_the_snippet_lacks():
  """Class = the scene of the snippet's video, which the snippet itself does not show: only
  the probe that sees the video's mean input separates it."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2048, 8)).astype(np.float32)
  y = rng.integers(0, 2, 2048).astype(np.int32)
  context = np.zeros_like(x)
  context[np.arange(2048), y] = 3.0
  got = {kind: snippet_probe.accuracies(
      snippet_probe.train_probe(kind, x, y, context, 3, seed=0, steps=1500, dim=16, units=2),
      x, y, context, num_classes=3)['all'] for kind in ('linear', 'video')}
  assert got['linear'] < 0.7 and got['video'] > 0.97, got


def test_aumn_probe_starts_as_the_mil_probe():
  """Zero unit classifiers: at initialisation the aumn probe's logits are the mil probe's
  (the model's unit_init='zeros' beside the shared classifier)."""
  rng = jax.random.PRNGKey(3)
  x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
  aumn = snippet_probe.init_probe('aumn', rng, 8, 5, dim=6, units=3)
  mil = snippet_probe.init_probe('mil', rng, 8, 5, dim=6, units=3)
  np.testing.assert_array_equal(snippet_probe.probe_logits(aumn, x, x),
                                snippet_probe.probe_logits(mil, x, x))
  with pytest.raises(ValueError, match="probe 'mlp': not one of"):
    snippet_probe.init_probe('mlp', rng, 8, 5, dim=6, units=3)


def test_unit_classifiers_are_a_gated_sum_over_units():
  """probe_logits of the aumn probe with non-zero unit classifiers against a loop over
  snippets and units: z W + b + sum_l g_l (z W_l + b_l), g = softmax(z Q / TAU)."""
  rng = np.random.default_rng(2)
  params = snippet_probe.init_probe('aumn', jax.random.PRNGKey(0), 8, 5, dim=6, units=3)
  params = dict(params, w_units=rng.standard_normal((3, 6, 5)).astype(np.float32),
                b_units=rng.standard_normal((3, 5)).astype(np.float32))
  x = rng.standard_normal((4, 8)).astype(np.float32)
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  for n in range(4):
    z = np.maximum(x[n] @ p['a'] + p['c'], 0.0)
    gate = np.exp(z @ p['q'] / snippet_probe.TAU - np.max(z @ p['q'] / snippet_probe.TAU))
    gate /= gate.sum()
    want = z @ p['w'] + p['b'] + sum(gate[l] * (z @ p['w_units'][l] + p['b_units'][l])
                                     for l in range(3))
    np.testing.assert_allclose(snippet_probe.probe_logits(params, x, x)[n], want, rtol=1e-4,
                               atol=1e-4)


def test_action_accuracy_ignores_background_snippets_and_the_background_column():
  """accuracies: 'action' is the argmax over the C action columns on action snippets only;
  'all' is the argmax over C + 1 columns on every snippet (a 'linear' probe, W = I)."""
  x = np.array([[5., 1., 9.],    # class 0, background column highest: action hit, all miss
                [1., 5., 0.],    # class 1: hit in both
                [5., 1., 0.],    # class 1: miss in both
                [0., 0., 9.],    # background: counts in 'all' only (hit)
                [9., 0., 0.]],   # background: miss in 'all'
               np.float32)
  y = np.array([0, 1, 1, 2, 2], np.int32)
  params = {'w': np.eye(3, dtype=np.float32), 'b': np.zeros(3, np.float32)}
  got = snippet_probe.accuracies(params, x, y, np.zeros_like(x), num_classes=2)
  assert got == {'action': 2 / 3, 'all': 2 / 5}


def test_snippet_dataset_labels_each_snippet_by_the_instance_covering_it(tiny_data_dir):
  split = data.load_split(tiny_data_dir, 'synthetic', 'train')
  x, y, context = snippet_probe.snippet_dataset(split, np.random.default_rng(0))
  want, start = [], 0
  for i in range(len(split)):
    covered = split.snippet_classes(i, int(split.lengths[i]))
    kept = covered[covered.sum(-1) <= 1]
    want += [int(np.argmax(row)) if row.any() else split.num_classes for row in kept]
    features = np.asarray(split[i]['features'], np.float64)
    normed = (features - features.mean(-1, keepdims=True)) / features.std(-1, keepdims=True)
    np.testing.assert_allclose(context[start:start + len(kept)],
                               np.broadcast_to(normed.mean(0), (len(kept), normed.shape[1])),
                               atol=1e-3)
    start += len(kept)
  np.testing.assert_array_equal(y, want)   # tiny videos are shorter than MAX_PER_VIDEO
  np.testing.assert_allclose(x.mean(-1), 0.0, atol=1e-4)
  np.testing.assert_allclose(x.std(-1), 1.0, atol=1e-2)


def test_a_built_dataset_is_probed_through_the_command_line(tiny_data_dir, tmp_path):
  """--data_dir: a dataset built by data_prep.build (how a real dump is probed); one row per
  probe and seed, accuracies in [0, 1], the JSON and markdown written."""
  out = tmp_path / 'probe.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'benchmarks.snippet_probe', '--dataset', 'synthetic',
       '--data_dir', tiny_data_dir, '--seeds', '0', '--steps', '5', '--dim', '8', '--units', '2',
       '--json', str(out), '--markdown', str(tmp_path / 'probe.md')],
      capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  record = json.loads(out.read_text())
  assert [r['probe'] for r in record['runs']] == list(snippet_probe.PROBES)
  assert all(0.0 <= r['action_acc'] <= 1.0 for r in record['runs'])
  assert '| synthetic | aumn |' in (tmp_path / 'probe.md').read_text()
