"""The class x unit usage matrix and the ground-truth snippet labels behind it, against loops."""
import os

import numpy as np

from aumn_jax import data
from aumn_jax import plotting


def _covered(split, i, t):
  """Snippet t's class set by its own overlap with each instance (>= half the snippet)."""
  meta = split.meta(i)
  step = meta['snippet_stride'] / meta['fps']
  lo, hi = t * step, (t + 1) * step
  labels = set()
  for a in split.annotations(i):
    s, e = a['segment']
    if max(0.0, min(hi, e) - max(lo, s)) >= 0.5 * step:
      labels.add(split.class_names.index(a['label']))
  return labels


def test_usage_matrix_matches_a_loop_over_snippets(tiny_data_dir, tmp_path):
  split = data.load_split(tiny_data_dir, 'synthetic', 'test')
  rng = np.random.default_rng(0)
  num_units = 5
  outputs = {vid: {'read_attn': rng.dirichlet(np.ones(num_units), size=int(n))}
             for vid, n in zip(split.video_ids, split.lengths)}
  usage, counts = plotting.class_unit_usage(outputs, split)

  C = split.num_classes
  want_sum, want_n = np.zeros((C + 1, num_units)), np.zeros(C + 1)
  for i, vid in enumerate(split.video_ids):
    attn = outputs[vid]['read_attn']
    for t in range(attn.shape[0]):
      labels = _covered(split, i, t)
      np.testing.assert_array_equal(
          split.snippet_classes(i, attn.shape[0])[t], [c in labels for c in range(C)])
      for c in (labels or {C}):
        want_sum[c] += attn[t]
        want_n[c] += 1
  np.testing.assert_array_equal(counts, want_n)
  assert want_n[C] > 0 and np.all(want_n[:C] > 0)          # every row is really exercised
  np.testing.assert_allclose(usage, want_sum / want_n[:, None], rtol=1e-12)
  np.testing.assert_allclose(usage.sum(axis=1), 1.0, rtol=1e-12)

  path = str(tmp_path / 'plots' / 'class_unit_usage.png')
  plotting.plot_class_unit_usage(path, usage, counts, split.class_names)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(path) > 1000
