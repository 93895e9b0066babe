"""models.py: output contract, masks (padding changes nothing), memory-state semantics, grads.

Compiles dominate the run time on 2 cores, so each model variant is jitted once (cached) and
every test reads what it needs from the same few compiled steps.
"""
import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import conftest
from aumn_jax import losses
from aumn_jax import memory
from aumn_jax import models
from configs import thumos

B, T, F, C = 8, 24, 12, 3              # B = the 8 fake devices of conftest.py
C1 = C + 1
EXTRA = 8                              # padded snippets appended in the padding tests
OUT_KEYS = {'cas', 'cas_supp', 'fg', 'video_logits', 'video_logits_supp'}
MEMORY_KEYS = {'update_attn', 'update_cos', 'read_attn', 'memory_adapted', 'mass'}
MOMENTUM = 0.5                         # large, so a moved bank is unmistakable
RNG = jax.random.PRNGKey(7)


def _config(head, center, dropout):
  c = thumos.get_config()
  c.model.head = head
  c.model.dim = 16
  c.model.num_units = 4
  c.model.topk_ratio = 4
  c.model.center_features = center
  c.model.dropout = dropout
  c.memory.momentum = MOMENTUM
  return c


def _batch():
  """8 videos of 24, 17, 5, 10, 24, 1, 12, 20 valid snippets; video 0 is all zeros."""
  rng = np.random.default_rng(0)
  x = np.maximum(rng.normal(size=(B, T, F)), 0).astype(np.float32)
  mask = np.zeros((B, T), np.float32)
  for b, n in enumerate([24, 17, 5, 10, 24, 1, 12, 20]):
    mask[b, :n] = 1
  x[0] = 0.0                           # a whole all-zero video: the safe norm's worst case
  x[3, 2:4] = 0.0                      # and all-zero snippets inside a video
  x = np.where(mask[..., None] > 0, x, 7.0)
  labels = np.eye(C, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0, 1]]
  labels[3, 1] = 1.0
  return x, mask, labels


def _pad(x, mask):
  """Appends EXTRA padded snippets of garbage (huge values, NaN, Inf) with mask 0."""
  rng = np.random.default_rng(5)
  junk = rng.normal(scale=1e4, size=(B, EXTRA, F)).astype(np.float32)
  junk[:, 0, 0] = np.nan
  junk[:, -1, 1] = np.inf
  x_pad = np.concatenate([x, junk], axis=1)
  x_pad[:, :T][mask == 0] = -3e3       # and other garbage in the videos' existing padding
  return x_pad, np.concatenate([mask, np.zeros((B, EXTRA), np.float32)], axis=1)


@functools.lru_cache(maxsize=None)
def _variables(head):
  # center_features and dropout change no variable: every variant of a head shares these.
  x, mask, _ = _batch()
  model = models.create_model(_config(head, True, 0.0), C)
  init = jax.jit(functools.partial(model.init, train=False))
  return init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, x, mask)


@functools.lru_cache(maxsize=None)
def _setup(head, center, dropout):
  """(model, variables, grad_step, eval_step) for one variant, jitted once."""
  config = _config(head, center, dropout)
  model = models.create_model(config, C)
  variables = _variables(head)

  def loss_fn(params, x, mask, labels, rng):
    out, new_vars = model.apply({**variables, 'params': params}, x, mask, train=True,
                                rngs={'dropout': rng}, mutable=['memory'])
    loss, aux = losses.total_loss(out, {'labels': labels, 'mask': mask}, config.loss)
    return loss, (aux, out, new_vars)

  grad_step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  eval_step = jax.jit(lambda v, x, mask: model.apply(v, x, mask, train=False,
                                                     mutable=['memory']))
  return model, variables, grad_step, eval_step


@functools.lru_cache(maxsize=None)
def _train_results(head, center, dropout, padded, rng_seed=7):
  _, variables, grad_step, _ = _setup(head, center, dropout)
  x, mask, labels = _batch()
  if padded:
    x, mask = _pad(x, mask)
  (loss, (aux, out, new_vars)), grads = grad_step(
      variables['params'], x, mask, labels, jax.random.PRNGKey(rng_seed))
  return loss, aux, conftest.flat_outputs(out), new_vars, grads


# Variants (head, center_features, dropout) whose training step is compiled.
DEFAULT = ('aumn', True, 0.0)          # the configs/thumos.py memory, dropout off
SPEC_LITERAL = ('aumn', False, 0.5)    # center_features off: H = 0 exactly at all-zero snippets
BASELINE = ('mil', False, 0.0)


@pytest.mark.parametrize('variant', [DEFAULT, BASELINE])
def test_variables_and_output_contract(variant):
  variables = _variables(variant[0])
  _, _, out, new_vars, _ = _train_results(*variant, padded=False)
  x, mask, _ = _batch()
  typed, _ = _setup(*variant)[3](variables, x, mask)
  assert isinstance(typed, models.Outputs)
  assert (typed.memory is not None) == (variant[0] == 'aumn')
  # Both heads keep the default fg_norm='batch''s running mean of a's layer input; AUMN the bank.
  assert set(variables) == {'params', 'memory'} and set(new_vars) == {'memory'}
  assert set(variables['memory']) == ({'bank', 'skeleton'} if variant[0] == 'aumn'
                                      else {'skeleton'})
  assert variables['memory']['skeleton']['fg_mean'].shape == (16,)
  if variant[0] == 'aumn':
    assert variables['memory']['bank'].shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(variables['memory']['bank'], axis=-1), 1.0,
                               rtol=1e-6)
    assert set(out) == OUT_KEYS | MEMORY_KEYS
    assert out['update_attn'].shape == out['read_attn'].shape == (B, T, 4)
    assert out['update_cos'].shape == (B, T, 4)
    assert out['memory_adapted'].shape == (B, 4, 16) and out['mass'].shape == (B, 4)
    np.testing.assert_allclose(np.asarray(out['read_attn']).sum(-1), mask, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out['update_attn']).sum(-1), mask, atol=1e-5)
  else:
    assert set(out) == OUT_KEYS
  assert out['cas'].shape == out['cas_supp'].shape == (B, T, C1)
  assert out['video_logits'].shape == out['video_logits_supp'].shape == (B, C1)
  fg = np.asarray(out['fg'])
  assert np.all(((fg > 0) & (fg < 1)) | (mask == 0))


def test_unknown_head_is_a_clear_error():
  with pytest.raises(ValueError, match='model.head'):
    models.create_model(_config('mlp', True, 0.0), C)


def test_suppress_forms_match_numpy():
  rng = np.random.default_rng(2)
  s = rng.normal(size=(3, 6, 4)).astype(np.float32)
  fg = rng.uniform(size=(3, 6)).astype(np.float32)
  mask = np.ones((3, 6), np.float32)
  mask[1, 4:] = 0
  mask[2] = 0                          # a padding video
  s[1, 4:] = -100.0                    # padded logits would be the min of a plain min
  np.testing.assert_allclose(models.suppress(s, fg, mask, 'features'), fg[..., None] * s)
  got = np.asarray(models.suppress(s, fg, mask, 'logits'))
  for b, n in ((0, 6), (1, 4)):
    low = s[b, :n].min(axis=0)
    np.testing.assert_allclose(got[b, :n], fg[b, :n, None] * (s[b, :n] - low) + low,
                               rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(got))
  # a = 1 leaves the logits as they are; a = 0 gives every snippet the video's lowest logit
  np.testing.assert_allclose(models.suppress(s, np.ones_like(fg), mask, 'logits')[0], s[0],
                             atol=1e-6)
  np.testing.assert_allclose(models.suppress(s, 0 * fg, mask, 'logits')[0],
                             np.broadcast_to(s[0].min(0), s[0].shape), atol=1e-6)
  with pytest.raises(ValueError, match="suppress='input'"):
    models.suppress(s, fg, mask, 'input')


def test_topk_mean_matches_numpy_with_dynamic_k():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(4, 10, 3)).astype(np.float32)
  mask = np.zeros((4, 10), np.float32)
  for b, n in enumerate([10, 7, 3, 0]):
    mask[b, :n] = 1
  s[mask == 0] = 100.0                 # padded scores would win a plain top-k
  got = np.asarray(jax.jit(models.topk_mean, static_argnums=2)(s, mask, 3))
  for b, n in enumerate([10, 7, 3]):
    k = max(1, n // 3)
    for c in range(3):
      want = np.mean(sorted(s[b, :n, c], reverse=True)[:k])
      np.testing.assert_allclose(got[b, c], want, rtol=1e-6)
  np.testing.assert_array_equal(got[3], 0.0)   # no valid snippet: finite, 0


@pytest.mark.parametrize('variant', [DEFAULT, BASELINE])
def test_padding_changes_no_output_loss_grad_or_bank(variant):
  loss, aux, out, new_vars, grads = _train_results(*variant, padded=False)
  loss_p, aux_p, out_p, new_vars_p, grads_p = _train_results(*variant, padded=True)
  _, mask, _ = _batch()
  valid = mask > 0
  per_snippet = ('cas', 'cas_supp', 'fg')
  per_video = ('video_logits', 'video_logits_supp')
  if variant[0] == 'aumn':
    per_snippet += ('update_attn', 'update_cos', 'read_attn')
    per_video += ('memory_adapted', 'mass')
  for k in per_snippet:
    np.testing.assert_allclose(np.asarray(out_p[k])[:, :T][valid], np.asarray(out[k])[valid],
                               rtol=1e-5, atol=1e-5, err_msg=k)
  for k in per_video:
    np.testing.assert_allclose(out_p[k], out[k], rtol=1e-5, atol=1e-5, err_msg=k)
  np.testing.assert_allclose(float(loss_p), float(loss), rtol=1e-5)
  assert set(aux_p) == set(aux)
  for k in aux:
    np.testing.assert_allclose(float(aux_p[k]), float(aux[k]), rtol=1e-4, atol=1e-6,
                               err_msg=k)
  for (path, g), g_p in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree_util.tree_leaves(grads_p)):
    np.testing.assert_allclose(g_p, g, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  if variant[0] == 'aumn':
    np.testing.assert_allclose(new_vars_p['memory']['bank'], new_vars['memory']['bank'],
                               rtol=1e-5, atol=1e-6)


def test_bank_moves_only_in_training_and_stays_on_sphere():
  _, variables, _, eval_step = _setup(*DEFAULT)
  x, mask, _ = _batch()
  bank0 = np.asarray(variables['memory']['bank'])
  _, after_eval = eval_step(variables, x, mask)
  np.testing.assert_array_equal(after_eval['memory']['bank'], bank0)
  _, _, out, new_vars, _ = _train_results(*DEFAULT, padded=False)
  bank1 = np.asarray(new_vars['memory']['bank'])
  np.testing.assert_allclose(np.linalg.norm(bank1, axis=-1), 1.0, rtol=1e-6)
  # SPEC §2.4 in NumPy from the step's own M~ and n.
  adapted, mass = np.asarray(out['memory_adapted']), np.asarray(out['mass'])
  total = mass.sum(0)[:, None]
  moved = bank0 + MOMENTUM * (np.einsum('bl,bld->ld', mass, adapted) - total * bank0) / (
      total + memory.MASS_EPS)
  np.testing.assert_allclose(bank1, moved / np.linalg.norm(moved, axis=-1, keepdims=True),
                             atol=1e-5)
  assert np.max(np.abs(bank1 - bank0)) > 1e-2


@pytest.mark.parametrize('variant', [DEFAULT, BASELINE])
def test_gradients_finite_at_init(variant):
  # DEFAULT sees H = 0 exactly (video 0 is all zeros, conv bias 0 at init) at the safe norms.
  loss, _, _, _, grads = _train_results(*variant, padded=False)
  assert np.isfinite(float(loss))
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  for path, g in leaves:
    assert np.all(np.isfinite(np.asarray(g))), jax.tree_util.keystr(path)
  assert all(np.any(np.asarray(g) != 0) for _, g in leaves)


def test_aumn_starts_as_the_baseline_and_its_units_add_to_it():
  """The default AUMN classifier (shared_classifier, unit_init='zeros'): at init its outputs are
  BaS-Net's with the same skeleton and classifier weights; nonzero units change them."""
  x, mask, _ = _batch()
  variables = _variables('aumn')
  assert not np.any(np.asarray(variables['params']['unit_kernel']))
  baseline = models.create_model(_config('mil', True, 0.0), C)
  shared = {k: variables['params'][k] for k in ('skeleton', 'classifier', 'classifier_bias')}
  skeleton = {'skeleton': variables['memory']['skeleton']}   # fg_norm='batch''s running mean
  want = conftest.flat_outputs(baseline.apply({'params': shared, 'memory': skeleton}, x, mask,
                                              train=False))
  _, _, _, eval_step = _setup(*DEFAULT)
  got = conftest.flat_outputs(eval_step(variables, x, mask)[0])
  for k in OUT_KEYS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6, err_msg=k)
  units = jax.random.normal(jax.random.PRNGKey(3), variables['params']['unit_kernel'].shape)
  moved = {**variables, 'params': {**variables['params'], 'unit_kernel': units}}
  got, _ = eval_step(moved, x, mask)
  assert np.max(np.abs(np.asarray(got.cas) - np.asarray(want['cas']))) > 1e-2


def test_unit_context_adds_each_units_classifier_of_the_video_summary():
  """model.unit_context: V_l start at zero (the default model's outputs), and nonzero V_l add
  sum_l A_tl (c_b V_l), c_b = sqrt(D) normalize(sum_l n_bl M~_bl), computed here in NumPy."""
  x, mask, _ = _batch()
  config = _config('aumn', True, 0.0)
  config.model.unit_context = True
  model = models.create_model(config, C)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, x, mask)
  kernel = variables['params'].pop('unit_context_kernel')
  assert kernel.shape == (4, 16, C1) and not np.any(np.asarray(kernel))
  default = _variables('aumn')
  assert jax.tree_util.tree_all(jax.tree.map(np.array_equal, variables, default))
  apply = jax.jit(lambda v: model.apply(v, x, mask, train=False))
  want = conftest.flat_outputs(_setup(*DEFAULT)[3](default, x, mask)[0])
  v_LxDxC = jax.random.normal(jax.random.PRNGKey(3), kernel.shape)
  for v, added in ((kernel, False), (v_LxDxC, True)):
    out = apply({**variables, 'params': {**variables['params'], 'unit_context_kernel': v}})
    got = conftest.flat_outputs(out)
    context = np.einsum('bl,bld->bd', got['mass'], got['memory_adapted'])
    context /= np.sqrt(np.sum(context ** 2, -1, keepdims=True) + memory.NORM_EPS ** 2)
    context *= np.sqrt(context.shape[-1])
    delta = np.einsum('btl,bd,ldc->btc', got['read_attn'], context, np.asarray(v))
    delta *= mask[..., None]
    assert added == bool(np.max(np.abs(delta)) > 1e-2)
    np.testing.assert_allclose(got['cas'], want['cas'] + delta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got['cas_supp'], want['cas_supp'] + got['fg'][..., None] * delta,
                               rtol=1e-5, atol=1e-5)


def test_uncentred_memory_with_dropout_trains_forward():
  """SPEC's literal memory (no centring) with dropout: finite, and dropout uses its rng."""
  model, variables, _, _ = _setup(*SPEC_LITERAL)
  x, mask, _ = _batch()
  step = jax.jit(lambda rng: model.apply(variables, x, mask, train=True, rngs={'dropout': rng},
                                         mutable=['memory']))
  (out_a, vars_a), (out_b, _) = step(jax.random.PRNGKey(0)), step(jax.random.PRNGKey(1))
  out_a, out_b = conftest.flat_outputs(out_a), conftest.flat_outputs(out_b)
  for k, v in out_a.items():
    assert np.all(np.isfinite(np.asarray(v))), k
  np.testing.assert_allclose(np.linalg.norm(vars_a['memory']['bank'], axis=-1), 1.0, rtol=1e-6)
  assert np.max(np.abs(np.asarray(out_a['cas']) - np.asarray(out_b['cas']))) > 1e-3


def test_bank_update_is_global_under_batch_sharding():
  """jit over a batch-sharded input: plain batch sums are global, every device gets one bank."""
  assert jax.device_count() == B
  model, variables, _, _ = _setup(*DEFAULT)
  want = _train_results(*DEFAULT, padded=False)[3]['memory']['bank']   # unsharded
  x, mask, _ = _batch()
  mesh = jax.make_mesh((B,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  batched = NamedSharding(mesh, P('data'))
  step = jax.jit(lambda v, xx, mm: model.apply(v, xx, mm, train=True, mutable=['memory'])[1],
                 in_shardings=(NamedSharding(mesh, P()), batched, batched),
                 out_shardings=NamedSharding(mesh, P()))
  got = step(variables, x, mask)['memory']['bank']
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_training_without_mutable_memory_is_an_error():
  # As with BatchNorm: a train step that forgets mutable=['memory'] fails instead of silently
  # freezing the bank. Raised while tracing, so nothing is compiled.
  model, variables, _, _ = _setup(*DEFAULT)
  x, mask, _ = _batch()
  with pytest.raises(flax.errors.ModifyScopeVariableError):
    jax.jit(lambda v: model.apply(v, x, mask, train=True))(variables)


def test_embedding_conv_and_gemm_formulations_agree():
  """Both exact formulations of the k=3 conv (picked per backend) give the same H and params."""
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 9, 12))
  mask = jnp.asarray([[1.0] * 9, [1.0] * 6 + [0.0] * 3])
  conv = models.Embedding(8, 0.0, 'none', impl='conv')
  gemm = models.Embedding(8, 0.0, 'none', impl='gemm')
  variables = conv.init(jax.random.PRNGKey(0), x, mask, False)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, gemm.init(jax.random.PRNGKey(0), x, mask, False))
  np.testing.assert_allclose(conv.apply(variables, x, mask, False)[0],
                             gemm.apply(variables, x, mask, False)[0], atol=1e-5, rtol=1e-5)
  # nn.Conv's layout, initialisation and result: checkpoints and the PyTorch transfer hold.

  class NnConv(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      return flax.linen.Conv(8, kernel_size=(3,), padding='SAME', name='conv')(x)

  reference = NnConv().init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(variables['params']['conv']['kernel'],
                                reference['params']['conv']['kernel'])
  h = NnConv().apply(reference, x * mask[..., None])
  np.testing.assert_allclose(conv.apply(variables, x, mask, False)[0],
                             jnp.maximum(h, 0) * mask[..., None], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('head', ['mil', 'aumn'])
def test_modules_have_no_second_set_of_defaults(head):
  """Every model setting comes from the config: the heads' fields have no defaults to drift."""
  config = thumos.get_config()
  config.model.head = head
  config.model.center_features = not config.model.center_features  # a non-default value
  model = models.create_model(config, num_classes=5)
  fields = {f.name: f for f in dataclasses.fields(model) if f.name not in ('parent', 'name')}
  with_defaults = [n for n, f in fields.items()
                   if f.default is not dataclasses.MISSING or
                   f.default_factory is not dataclasses.MISSING]
  assert not with_defaults
  for name in fields:
    if name in config.model:
      assert getattr(model, name) == config.model[name], name
  assert model.num_classes == 5
  if head == 'aumn':
    assert model.momentum == config.memory.momentum
