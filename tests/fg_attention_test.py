"""The foreground attention stays alive (issue 9): it neither dies nor saturates early.

Before docs/method.md §7's fixes, a fell below 0.05 within ~20 steps on every dataset (Adam
moves all D weights of the attention layer the same way when H >= 0) and stayed there for up
to 250 steps. This trains the configs/synthetic.py model (D 256) on the tiny preset through the
real loop, logging every step, and reads `diag_fg_mean` from metrics.jsonl.
"""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from aumn_jax import models
from aumn_jax import parallel
from aumn_jax import train_loop


@pytest.mark.parametrize('head', ['mil', 'aumn'])
def test_foreground_attention_stays_alive(head, tiny_data_dir, tmp_path):
  config = conftest.tiny_config(tiny_data_dir)
  config.model.head = head
  config.model.dim = 256          # the embedded default's width: the failure needs a real D
  config.model.num_units = 16
  config.optim.learning_rate = 3e-4
  config.data.max_snippets = 64
  config.num_train_steps = 60
  config.log_every_steps = 1
  config.eval_every_steps = 60
  config.checkpoint_every_steps = 60
  config.evaluation.num_plots = 0
  workdir = str(tmp_path / head)
  train_loop.train_and_evaluate(config, workdir, mesh=parallel.make_mesh(jax.devices()[:1]))
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    trace = {r['step']: r['diag_fg_mean'] for r in map(json.loads, f) if 'diag_fg_mean' in r}
  window = {s: a for s, a in trace.items() if 10 <= s <= 60}
  assert len(window) == 51
  dead = {s: round(a, 4) for s, a in window.items() if not 0.05 < a < 0.95}
  assert not dead, f'mean foreground attention left (0.05, 0.95) at steps {dead}'


def test_batch_centred_attention_matches_numpy_and_a_uniform_push_moves_only_its_bias():
  """fg_norm='batch' (docs/method.md §9): training centres a's layer input over every valid
  snippet of the batch, eval over the running mean of those means (moved by FG_MEAN_MOMENTUM).
  A loss that pushes every valid logit alike gives the layer's weights no gradient."""
  rng = np.random.default_rng(3)
  B, T, F, D = 3, 7, 5, 6
  x = np.maximum(rng.normal(size=(B, T, F)), 0).astype(np.float32)
  mask = np.ones((B, T), np.float32)
  mask[1, 4:] = 0
  mask[2, 1:] = 0
  x = np.where(mask[..., None] > 0, x, 9.0).astype(np.float32)   # padding must not count
  config = conftest.tiny_config('unused')
  config.model.head = 'mil'
  config.model.dim = D
  config.model.dropout = 0.0
  config.model.fg_norm = 'batch'
  model = models.create_model(config, 2)
  variables = model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                         x, mask)
  assert set(variables['memory']['skeleton']) == {'fg_mean'}
  np.testing.assert_array_equal(variables['memory']['skeleton']['fg_mean'], np.zeros(D))

  p = variables['params']['skeleton']
  w = np.asarray(p['fg_attention']['kernel'])[:, 0]
  bias = float(np.asarray(p['fg_attention']['bias'])[0])
  h = np.asarray(model.apply(variables, x, mask, train=False).fg)
  conv = p['embedding']['conv']
  xn = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)  # layernorm
  xn = np.where(mask[..., None] > 0, xn, 0.0)
  xp = np.pad(xn, ((0, 0), (1, 1), (0, 0)))
  k = np.asarray(conv['kernel'])
  hh = sum(xp[:, i:i + T] @ k[i] for i in range(3)) + np.asarray(conv['bias'])
  hh = np.maximum(hh, 0) * mask[..., None]
  sigmoid = lambda z: 1 / (1 + np.exp(-z))
  # eval before any training step: the running mean is still zero
  np.testing.assert_allclose(h, sigmoid(hh @ w + bias) * mask, rtol=1e-4, atol=1e-5)

  out, new = model.apply(variables, x, mask, train=True, rngs={'dropout': jax.random.PRNGKey(2)},
                         mutable=['memory'])
  mean = (hh * mask[..., None]).sum((0, 1)) / mask.sum()
  np.testing.assert_allclose(np.asarray(out.fg), sigmoid((hh - mean) @ w + bias) * mask,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new['memory']['skeleton']['fg_mean'],
                             (1 - models.FG_MEAN_MOMENTUM) * mean, rtol=1e-4, atol=1e-6)
  out = model.apply({**variables, **new}, x, mask, train=False)
  np.testing.assert_allclose(
      np.asarray(out.fg),
      sigmoid((hh - (1 - models.FG_MEAN_MOMENTUM) * mean) @ w + bias) * mask,
      rtol=1e-4, atol=1e-5)

  def uniform_push(net, params):
    fg = net.apply({**variables, 'params': params}, x, mask, train=True,
                   rngs={'dropout': jax.random.PRNGKey(2)}, mutable=['memory'])[0].fg
    fg = jnp.where(mask > 0, fg, 0.5)  # padding's a is 0; logit(0.5) = 0 keeps it out
    return jnp.sum(jnp.log(fg) - jnp.log1p(-fg))

  grads = jax.grad(functools.partial(uniform_push, model))(variables['params'])
  grads = grads['skeleton']['fg_attention']
  np.testing.assert_allclose(grads['kernel'], 0.0, atol=1e-4)
  assert float(grads['bias'][0]) == pytest.approx(mask.sum(), rel=1e-4)
  # Uncentred (the default), the same push moves every weight that H reaches: H >= 0.
  config.model.fg_norm = 'none'
  grads = jax.grad(functools.partial(uniform_push, models.create_model(config, 2)))(
      variables['params'])['skeleton']['fg_attention']
  np.testing.assert_allclose(grads['kernel'][:, 0], hh.sum((0, 1)), rtol=1e-4)
