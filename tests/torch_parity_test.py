"""benchmarks/torch_aumn.py computes what aumn_jax computes: the proof behind the benchmark.

Same weights (transferred from Flax) and the same random masked batch give the same outputs,
every loss term and diagnostic, the same gradient of every parameter and the same memory-bank
update; N steps of the project's jitted train_step and of the PyTorch Adam step on the same
batches end at the same params and bank. Dropout is off (rate 0) so both are deterministic.

Function by function (docs/tweaks.md): every public function of aumn_jax/memory.py and
aumn_jax/losses.py has a mirror of the same name and parameters in the twin that computes the
same values on random inputs, so a formula tweaked on one side only fails a test naming it; a
config option the twin does not implement is refused in one line, never computed differently.

Tolerance: a norm-relative error per tensor, |a - b|_2 / |b|_2 <= 1e-4 (float32). Per tensor,
because an elementwise relative error is meaningless at the near-zero entries every gradient
has; 1e-4 is ~1000 float32 ulps: room for the two libraries' different reduction orders and
the 1/tau_u = 100 amplification of cosine rounding inside the unit softmax, while a formula
difference (e.g. a missing centring, below) is off by orders of magnitude more. Measured on
this machine: outputs <= 5e-7, loss terms and diagnostics <= 4e-6, gradients <= 3e-6; after 5
Adam steps params <= 1e-5 and their changes <= 2e-5.

The PyTorch tests are skipped when torch is not installed (it is an optional dependency:
pip install -r requirements-torch.txt).
"""
import functools
import inspect
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from aumn_jax import losses
from aumn_jax import memory
from aumn_jax import models
from aumn_jax import parallel
from aumn_jax import train_step
from configs import thumos

try:
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_aumn  # pylint: disable=g-import-not-at-top
except ImportError:  # optional dependency
  torch = torch_aumn = None

requires_torch = pytest.mark.skipif(
    torch is None, reason='PyTorch is not installed (optional: pip install -r '
    'requirements-torch.txt); the JAX/PyTorch parity tests need it')

B, T, F, C = 4, 32, 12, 5
D, L = 16, 4                       # model.dim, model.num_units
TOL = 1e-4
# Adam divides by sqrt(v): where a gradient entry is tiny, rounding differences are amplified
# into the update itself, so the N-step parameter *changes* get a looser bound than the params.
STEP_DELTA_TOL = 1e-3
NUM_STEPS = 5

# (head, center_features, tau_u, spec_units): the configs/thumos.py memory (shared classifier,
# zero-initialised units), SPEC's literal one (units alone, each initialised), BaS-Net.
DEFAULT = ('aumn', True, 0.01, False)
SPEC_LITERAL = ('aumn', False, 0.1, True)
BASELINE = ('mil', False, 0.01, False)
# The default fg_norm='batch' keeps a running mean in the `memory` collection (for mil too);
# SPEC's uncentred attention input, on both heads.
DEFAULT_UNCENTRED = DEFAULT + ('none',)
BASELINE_UNCENTRED = BASELINE + ('none',)
_NAMES = {DEFAULT: 'default', SPEC_LITERAL: 'spec_literal', BASELINE: 'baseline',
          DEFAULT_UNCENTRED: 'default_uncentred', BASELINE_UNCENTRED: 'baseline_uncentred'}


def _id(value):
  """Test ids that name the variant (None: pytest's own id, for the other parameters)."""
  return _NAMES.get(value) if isinstance(value, tuple) else None


def _config(head, center, tau_u, spec_units=False, fg_norm=None):
  c = thumos.get_config()
  if spec_units:
    c.model.unit_init, c.model.shared_classifier = 'lecun', False
  if fg_norm is not None:
    c.model.fg_norm = fg_norm
  c.model.head = head
  c.model.dim = D
  c.model.num_units = L
  c.model.topk_ratio = 4
  c.model.center_features = center
  c.model.tau_u = tau_u
  c.model.dropout = 0.0
  c.memory.momentum = 0.5          # large, so the bank's move is far above rounding
  c.data.feature_dim = F
  c.data.max_snippets = T
  c.optim.learning_rate = 1e-3     # params move visibly in a few steps
  return c


def _batch(seed):
  """Non-negative features, ragged masks (one 1-snippet video), garbage in padding."""
  rng = np.random.default_rng(seed)
  x = np.maximum(rng.normal(size=(B, T, F)), 0).astype(np.float32)
  mask = np.zeros((B, T), np.float32)
  for b, n in enumerate([T, rng.integers(8, T), rng.integers(2, 8), 1]):
    mask[b, :n] = 1
  x[1, 2:4] = 0.0                  # all-zero snippets: the safe norm at exactly 0
  x = np.where(mask[..., None] > 0, x, np.float32(1e3))
  labels = (rng.random((B, C)) < 0.3).astype(np.float32)
  labels[np.arange(B), rng.integers(0, C, B)] = 1.0
  return {'features': x, 'mask': mask, 'labels': labels}


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  scale = np.linalg.norm(want)
  return np.linalg.norm(got - want) / (scale if scale > 0 else 1.0)


def _torch(batch):
  return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


@functools.lru_cache(maxsize=None)
def _initial_state(head, spec_units=False, fg_norm=None):
  """The project's own initial TrainState (params, bank, Adam state) on one device."""
  # centring and tau_u change no variable
  config = _config(head, True, 0.01, spec_units, fg_norm)
  mesh = parallel.make_mesh(jax.devices()[:1])
  return train_step.init_state(config, C, mesh), mesh


def _variables(state):
  """Seed 0's {'params', 'memory'}, without 'memory' where it is empty (mil with fg_norm='none')."""
  variables = train_step.replica({'params': state.params, 'memory': state.memory}, 0)
  if not variables['memory']:
    del variables['memory']
  return variables


@functools.lru_cache(maxsize=None)
def _jax_variables(head, spec_units=False, fg_norm=None):
  return _variables(_initial_state(head, spec_units, fg_norm)[0])


def _state_key(variant):
  """What of a variant decides its variables: head, spec_units[, fg_norm]."""
  return (variant[0],) + tuple(variant[3:])


@functools.lru_cache(maxsize=None)
def _jax_results(variant):
  """JAX training forward + loss + grads + moved bank, and the eval forward (one compile)."""
  config = _config(*variant)
  model = models.create_model(config, C)
  variables = _jax_variables(*_state_key(variant))

  def loss_fn(params, batch):
    out, new_vars = model.apply({**variables, 'params': params}, batch['features'],
                                batch['mask'], train=True, mutable=['memory'])
    loss, aux = losses.total_loss(out, batch, config.loss)
    return loss, (aux, out, new_vars)

  @jax.jit
  def run(params, batch):
    (loss, (aux, out, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch)
    eval_out = model.apply({**variables, 'params': params}, batch['features'], batch['mask'],
                           train=False)
    return loss, aux, out, new_vars, grads, eval_out

  loss, aux, out, new_vars, grads, eval_out = jax.device_get(run(variables['params'], _batch(0)))
  # Compared key by key with the twin's flat dicts.
  flat = conftest.flat_outputs
  return loss, aux, flat(out), new_vars, grads, flat(eval_out)


@functools.lru_cache(maxsize=None)
def _torch_results(variant, **overrides):
  config = _config(*variant)
  model = torch_aumn.from_flax(config, C, _jax_variables(*_state_key(variant)))
  for k, v in overrides.items():
    setattr(model, k, v)
  batch = _torch(_batch(0))
  model.eval()
  with torch.no_grad():
    eval_out = model(batch['features'], batch['mask'])
  model.train()
  out = model(batch['features'], batch['mask'])
  loss, aux = torch_aumn.total_loss(out, batch, config.loss)
  loss.backward()
  grads = {n: p.grad.clone() for n, p in model.named_parameters()}
  return model, loss, aux, out, grads, eval_out


def _flax_tree_of(state_dict_like):
  return torch_aumn.flax_from_state_dict(state_dict_like)


def test_package_never_imports_torch():
  """The main package stays PyTorch-free: torch is only the benchmark's optional baseline."""
  pkg = os.path.join(conftest.REPO, 'aumn_jax')
  for name in sorted(os.listdir(pkg)):
    if name.endswith('.py'):
      with open(os.path.join(pkg, name), encoding='utf-8') as f:
        assert not re.search(r'^\s*(import|from)\s+torch\b', f.read(), re.M), name


@requires_torch
@pytest.mark.parametrize('head', ['aumn', 'mil'])
def test_weight_transfer_round_trips_exactly(head):
  variables = _jax_variables(head)
  model = torch_aumn.from_flax(_config(head, True, 0.01), C, variables)
  back = torch_aumn.flax_from_state_dict(model.state_dict())
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(variables),
                               jax.tree.leaves(back)):
    np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
  # And the other way: a PyTorch-initialised model survives Flax and back.
  fresh = torch_aumn.create_model(_config(head, True, 0.01), C)
  again = torch_aumn.state_dict_from_flax(torch_aumn.flax_from_state_dict(fresh.state_dict()))
  assert set(again) == set(fresh.state_dict())
  for k, v in fresh.state_dict().items():
    assert torch.equal(again[k], v), k


@requires_torch
@pytest.mark.parametrize('variant', [DEFAULT, SPEC_LITERAL, BASELINE, DEFAULT_UNCENTRED,
                                     BASELINE_UNCENTRED], ids=_id)
def test_outputs_match(variant):
  _, _, out, _, _, eval_out = _jax_results(variant)
  _, _, _, t_out, _, t_eval = _torch_results(variant)
  assert set(t_out) == set(out) and set(t_eval) == set(eval_out)
  for k in out:
    assert _rel(t_out[k].detach(), out[k]) <= TOL, k
    assert _rel(t_eval[k], eval_out[k]) <= TOL, f'eval {k}'


@requires_torch
def test_unit_context_outputs_and_its_gradient_match():
  """model.unit_context (memory.unit_context_logits inside the model), with nonzero V_l: the
  twin's outputs in both modes and the gradient of V_l equal JAX's on the same weights."""
  config = _config(*DEFAULT)
  config.model.unit_context = True
  model = models.create_model(config, C)
  batch = _batch(0)
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)}, batch['features'],
      batch['mask'])
  params = dict(variables['params'])
  params['unit_context_kernel'] = jax.random.normal(jax.random.PRNGKey(2), (L, D, C + 1)) * 0.1
  variables = {**variables, 'params': params}

  def loss_fn(p):
    out, _ = model.apply({**variables, 'params': p}, batch['features'], batch['mask'],
                         train=True, mutable=['memory'])
    return losses.total_loss(out, batch, config.loss)[0], out

  (_, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  eval_out = model.apply(variables, batch['features'], batch['mask'], train=False)
  twin = torch_aumn.from_flax(config, C, variables)
  tb = _torch(batch)
  twin.eval()
  with torch.no_grad():
    t_eval = twin(tb['features'], tb['mask'])
  twin.train()
  t_out = twin(tb['features'], tb['mask'])
  torch_aumn.total_loss(t_out, tb, config.loss)[0].backward()
  for name, want, got in (('train', conftest.flat_outputs(out), t_out),
                          ('eval', conftest.flat_outputs(eval_out), t_eval)):
    for k in want:
      assert _rel(got[k].detach(), want[k]) <= TOL, f'{name} {k}'
  assert _rel(twin.unit_context_kernel.grad, grads['unit_context_kernel']) <= TOL
  assert np.max(np.abs(np.asarray(grads['unit_context_kernel']))) > 0


@requires_torch
@pytest.mark.parametrize('form', models.SUPPRESS_FORMS)
def test_suppress_matches(form):
  """models.suppress (each config.model.suppress) and its twin, on ragged masks and an empty
  video; the heads call it in the same place (test_outputs_match covers the default)."""
  rng = np.random.default_rng(5)
  s = rng.normal(size=(B, T, C + 1)).astype(np.float32)
  fg = rng.uniform(size=(B, T)).astype(np.float32)
  mask = _batch(0)['mask']
  mask[-1] = 0
  want = np.asarray(models.suppress(s, fg, mask, form))
  got = torch_aumn.suppress(*map(torch.from_numpy, (s, fg, mask)), form).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@requires_torch
@pytest.mark.parametrize('variant', [DEFAULT, SPEC_LITERAL, BASELINE], ids=_id)
def test_each_loss_term_and_diagnostic_matches(variant):
  loss, aux, _, _, _, _ = _jax_results(variant)
  _, t_loss, t_aux, _, _, _ = _torch_results(variant)
  assert set(t_aux) == set(aux)
  assert _rel(t_loss.item(), loss) <= TOL
  for k in aux:
    assert _rel(t_aux[k].item(), aux[k]) <= TOL, k
  if variant[0] == 'aumn':
    assert all(float(aux[k]) != 0 for k in ('loss_div', 'loss_hom', 'loss_sp', 'loss_read'))


@requires_torch
@pytest.mark.parametrize('variant', [DEFAULT, SPEC_LITERAL, BASELINE, DEFAULT_UNCENTRED,
                                     BASELINE_UNCENTRED], ids=_id)
def test_gradient_of_every_parameter_matches(variant):
  _, _, _, _, grads, _ = _jax_results(variant)
  _, _, _, _, t_grads, _ = _torch_results(variant)
  t_tree = _flax_tree_of({**t_grads, 'bank': torch.zeros(1)})['params']
  assert jax.tree.structure(t_tree) == jax.tree.structure(grads)
  for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(grads),
                               jax.tree.leaves(t_tree)):
    assert np.any(want != 0), jax.tree_util.keystr(path)
    assert _rel(got, want) <= TOL, jax.tree_util.keystr(path)


@requires_torch
@pytest.mark.parametrize('variant', [DEFAULT, SPEC_LITERAL], ids=_id)
def test_memory_bank_update_matches(variant):
  bank0 = _jax_variables('aumn')['memory']['bank']
  _, _, _, new_vars, _, _ = _jax_results(variant)
  model = _torch_results(variant)[0]
  want = new_vars['memory']['bank']
  assert np.max(np.abs(want - bank0)) > 1e-2               # the bank did move
  assert _rel(model.bank, want) <= TOL
  assert _rel(model.bank.numpy() - bank0, want - bank0) <= TOL


@requires_torch
def test_a_formula_difference_is_caught():
  """Negative control: the same weights with the centring switched are far outside the
  tolerance (SPEC's units, whose classifiers start nonzero, so the read attention shows)."""
  _, _, out, _, _, _ = _jax_results(SPEC_LITERAL)
  _, _, _, t_out, _, _ = _torch_results(SPEC_LITERAL, center_features=True)
  assert _rel(t_out['cas'].detach(), out['cas']) > 100 * TOL


@requires_torch
def test_gemm_formulation_of_the_conv_matches():
  """Skeleton(conv_impl='gemm') (the conv as one matmul, as aumn_jax does on GPU) == the conv."""
  _, _, out, _, grads, _ = _jax_results(DEFAULT)
  config = _config(*DEFAULT)
  model = torch_aumn.from_flax(config, C, _jax_variables('aumn'), conv_impl='gemm')
  batch = _torch(_batch(0))
  t_out = model(batch['features'], batch['mask'])
  torch_aumn.total_loss(t_out, batch, config.loss)[0].backward()
  for k in out:
    assert _rel(t_out[k].detach(), out[k]) <= TOL, k
  conv = grads['skeleton']['embedding']['conv']
  t_grads = _flax_tree_of({**{n: p.grad for n, p in model.named_parameters()},
                           'bank': torch.zeros(1)})['params']['skeleton']['embedding']['conv']
  for k in ('kernel', 'bias'):
    assert _rel(t_grads[k], conv[k]) <= TOL, k


@requires_torch
@pytest.mark.parametrize('variant,guide', [(DEFAULT, 'default'), (BASELINE, 'default'),
                                           (BASELINE, 'decaying_l1'),
                                           (BASELINE, 'centred_early'),
                                           (DEFAULT_UNCENTRED, 'default'),
                                           (BASELINE_UNCENTRED, 'default')], ids=_id)
def test_n_optimizer_steps_end_at_the_same_params_and_bank(variant, guide):
  """The project's jitted train_step (Adam + L2) vs torch.optim.Adam(weight_decay), N steps.
  guide='decaying_l1': the guide weight's decay to 0 within the N steps is followed step by
  step, with the other guide form (the L1 over all classes), so both forms are parity-tested;
  'centred_early': loss.guide_center_steps, centred for 2 of the N steps, then not.
  Then both trained models' eval forwards agree (the moved bank, the default fg_norm='batch''s
  running mean)."""
  config = _config(*variant)
  if guide == 'decaying_l1':
    config.loss.guide_steps = 3
    config.loss.guide_form, config.loss.guide_classes = 'l1', 'all'
  if guide == 'centred_early':
    config.loss.guide_center_steps = 2
  start = _jax_variables(*_state_key(variant))
  state, mesh = _initial_state(*_state_key(variant))
  state = jax.tree.map(jnp.copy, state)   # the step donates its state; keep the cached one
  model = torch_aumn.from_flax(config, C, start)
  optimizer = torch_aumn.make_optimizer(model, config.optim)
  step_fn, _ = train_step.jit_steps(config, mesh)
  for i in range(NUM_STEPS):
    batch = _batch(100 + i)
    state, metrics = step_fn(
        state, parallel.to_global({k: np.asarray(v)[None] for k, v in batch.items()},
                                  parallel.seed_batch_sharded(mesh)),
        jax.random.PRNGKey(0)[None])
    t_metrics = torch_aumn.train_step(model, optimizer, _torch(batch), config.loss, step=i)
    assert set(t_metrics) == set(metrics)
    for k in ('loss', 'grad_norm'):
      assert _rel(t_metrics[k].item(), metrics[k][0]) <= TOL, (i, k)
  final = _variables(state)
  t_final = torch_aumn.flax_from_state_dict(model.state_dict())
  assert jax.tree.structure(t_final) == jax.tree.structure(final)
  for (path, want), got, initial in zip(jax.tree_util.tree_leaves_with_path(final),
                                        jax.tree.leaves(t_final), jax.tree.leaves(start)):
    name = jax.tree_util.keystr(path)
    assert np.max(np.abs(want - initial)) > 1e-4, name     # every tensor moved
    assert _rel(got, want) <= TOL, name
    assert _rel(got - initial, want - initial) <= STEP_DELTA_TOL, name
  batch = _batch(200)
  eval_out = conftest.flat_outputs(models.create_model(config, C).apply(
      final, batch['features'], batch['mask'], train=False))
  model.eval()
  with torch.no_grad():
    t_eval = model(*(_torch(batch)[k] for k in ('features', 'mask')))
  assert set(t_eval) == set(eval_out)
  for k in eval_out:
    assert _rel(t_eval[k], eval_out[k]) <= TOL, f'eval {k}'


# ---------------------------------------------------------------------------------------------
# A tweak is one function: memory.py and losses.py against their mirrors, function by function.

def _public_functions(module):
  return sorted(name for name, f in vars(module).items()
                if inspect.isfunction(f) and f.__module__ == module.__name__
                and not name.startswith('_'))


# Every public function of the two modules, so one added on the JAX side is a failing case here
# until it has a mirror and a random-input case.
MIRRORED = ([f'memory.{name}' for name in _public_functions(memory)]
            + [f'losses.{name}' for name in _public_functions(losses)])
_RNG = object()   # init_bank's key: jax.random.PRNGKey(0) / a seeded torch.Generator


@functools.lru_cache(maxsize=None)
def _function_cases():
  """'module.name' -> argument tuples (NumPy arrays, dicts of them, Python values, configs):
  the ragged masks of _batch (a 1-snippet video, zero snippets), attentions that are
  distributions at valid snippets and 0 at padding, a unit that claimed nothing."""
  rng = np.random.default_rng(7)
  batch = _batch(0)
  mask, labels = batch['mask'], batch['labels']
  m = mask[..., None]
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  attention = lambda: (rng.dirichlet(np.ones(L), size=(B, T)) * m).astype(np.float32)
  h = np.maximum(normal(B, T, D), 0) * m
  h[1, 2:4] = 0.0
  x = normal(B, T, D) * m
  fg = rng.uniform(0.05, 0.95, (B, T)).astype(np.float32) * mask
  bank = normal(L, D)
  bank = bank / np.linalg.norm(bank, axis=-1, keepdims=True)
  adapted = normal(B, L, D)
  adapted = adapted / np.linalg.norm(adapted, axis=-1, keepdims=True)
  mass = rng.uniform(0.1, 3.0, (B, L)).astype(np.float32)
  mass[:, 2] = 0.0
  gate = rng.uniform(size=(B, L)).astype(np.float32)
  out_mil = {'cas': normal(B, T, C + 1) * m, 'cas_supp': normal(B, T, C + 1) * m, 'fg': fg,
             'video_logits': normal(B, C + 1), 'video_logits_supp': normal(B, C + 1)}
  out = {**out_mil, 'update_attn': attention(), 'read_attn': attention(),
         'update_cos': rng.uniform(-1, 1, (B, T, L)).astype(np.float32) * m,
         'memory_adapted': adapted, 'mass': mass}
  loss_cfg = _config(*DEFAULT).loss
  decaying = _config(*DEFAULT).loss
  decaying.guide_steps, decaying.guide_form, decaying.guide_classes = 4, 'l1', 'all'
  early = _config(*DEFAULT).loss
  early.guide_center_steps = 2
  return {
      'memory.safe_normalize': [(h,), (1e-4 * x, 0), (np.zeros((3, D), np.float32),)],
      'memory.cosine': [(x, bank), (h, adapted)],
      'memory.init_bank': [(_RNG, L, D)],
      'memory.center': [(h, mask)],
      'memory.update_attention': [(x, bank, mask, 0.1), (h, adapted, mask, 0.01)],
      'memory.write_units': [(h, attention(), fg, mask)],
      'memory.adapt_memory': [(bank, adapted, gate)],
      'memory.update_bank': [(bank, adapted, mass, 0.3)],
      'memory.read_attention': [(x, adapted, mask, 0.1)],
      'memory.unit_classify': [(attention(), h, normal(L, D, C + 1), normal(L, C + 1))],
      'memory.unit_context_logits': [(attention(), adapted, mass, normal(L, D, C + 1)),
                                     (attention(), adapted, 0.0 * mass, normal(L, D, C + 1))],
      'memory.mean_abs_offdiag_cos': [(bank,), (adapted,)],
      'losses.classification_loss': [(out, labels)],
      'losses.diversity_loss': [(adapted,)],
      'losses.homogeneity_loss': [(out['update_attn'], out['update_cos'], fg, mask)],
      'losses.read_sparsity': [(out['read_attn'], mask)],
      'losses.foreground_sparsity': [(fg, mask)],
      'losses.guide_loss': [(out, mask), (out, mask, labels, 'bce', True),
                            (out, mask, labels, 'l1', False), (out, mask, None, 'bce', False)],
      'losses.guide_weight': [(loss_cfg, 0), (decaying, 0), (decaying, 3), (decaying, 9)],
      'losses.guide_centred': [(loss_cfg, 0), (early, 1), (early, 2), (early, 9)],
      'losses.diagnostics': [(out, mask), (out_mil, mask)],
      'losses.total_loss': [(out, batch, loss_cfg), (out_mil, batch, decaying, 2),
                            (out, batch, early, 1)],
  }


def _to_jax(value):
  if value is _RNG:
    return jax.random.PRNGKey(0)
  if isinstance(value, np.ndarray):
    return jnp.asarray(value)
  if isinstance(value, tuple):
    return tuple(map(_to_jax, value))
  if isinstance(value, dict):
    converted = {k: _to_jax(v) for k, v in value.items()}
    # A model-outputs case (the twin's flat dict) is models.Outputs on the JAX side.
    return conftest.outputs_from_flat(converted) if 'cas' in value else converted
  return value


def _to_torch(value):
  if value is _RNG:
    return torch.Generator().manual_seed(0)
  if isinstance(value, np.ndarray):
    return torch.from_numpy(value.copy())
  if isinstance(value, (tuple, dict)):
    return (tuple(map(_to_torch, value)) if isinstance(value, tuple)
            else {k: _to_torch(v) for k, v in value.items()})
  return value


def _assert_close(got, want, where):
  if isinstance(want, dict):
    assert set(got) == set(want), where
    for k in want:
      _assert_close(got[k], want[k], f'{where}[{k!r}]')
  elif isinstance(want, tuple):
    assert isinstance(got, tuple) and len(got) == len(want), where
    for i, (g, w) in enumerate(zip(got, want)):
      _assert_close(g, w, f'{where}[{i}]')
  else:
    got = got.detach().numpy() if torch.is_tensor(got) else got
    assert np.shape(got) == np.shape(want), where
    assert _rel(got, want) <= TOL, f'{where}: relative error {_rel(got, want):.2e}'


def _parameters(fn):
  return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_mirror_parametrization_is_not_empty():
  """MIRRORED finds the modules' functions (a decorator hiding them would empty it silently)."""
  assert 'memory.read_attention' in MIRRORED and 'losses.total_loss' in MIRRORED
  assert len(MIRRORED) == len(set(MIRRORED)) >= 20


@requires_torch
@pytest.mark.parametrize('qualname', MIRRORED)
def test_mirror_matches_jax_function_on_random_inputs(qualname):
  """aumn_jax.<module>.<name> == torch_aumn.<name>: same parameters (names, order, defaults),
  same values on random inputs. A formula tweaked on one side only fails here, by name."""
  module_name, name = qualname.split('.')
  jax_fn = getattr({'memory': memory, 'losses': losses}[module_name], name)
  twin = getattr(torch_aumn, name, None)
  assert twin is not None, f'aumn_jax.{qualname} has no mirror torch_aumn.{name}'
  assert _parameters(twin) == _parameters(jax_fn), f'{qualname}: parameters differ'
  cases = _function_cases()
  assert qualname in cases, f'{qualname}: add its random-input case to _function_cases'
  for i, args in enumerate(cases[qualname]):
    want = jax.device_get(jax_fn(*_to_jax(args)))
    got = twin(*_to_torch(args))
    if name == 'init_bank':   # different generators: same shape, rows on the unit sphere
      assert got.shape == want.shape and got.dtype == torch.float32
      np.testing.assert_allclose(np.linalg.norm(got.numpy(), axis=-1), 1.0, rtol=1e-6)
      np.testing.assert_allclose(np.linalg.norm(want, axis=-1), 1.0, rtol=1e-6)
    else:
      _assert_close(got, want, f'{qualname} case {i}')


# Options aumn_jax implements and the twin does not (the twin's IMPLEMENTED lists what it does).
_NOT_IMPLEMENTED = [
    ('model.fg_input', 'features', models.FG_INPUTS),
    ('model.input_norm', 'center', models.INPUT_NORMS),
    ('compute_dtype', 'bfloat16', models.COMPUTE_DTYPES),
]


@requires_torch
@pytest.mark.parametrize('key,value,jax_options', _NOT_IMPLEMENTED)
def test_an_option_the_twin_does_not_implement_is_refused_in_one_line(key, value, jax_options):
  assert value in jax_options        # a real option of the JAX model, not a typo
  config = _config(*DEFAULT)
  group, _, field = key.rpartition('.')
  (config[group] if group else config)[field] = value
  expected = (f'config.{key}={value!r}: not implemented by the PyTorch twin '
              '(benchmarks/torch_aumn.py)')
  for build in (lambda: torch_aumn.create_model(config, C),
                lambda: torch_aumn.from_flax(config, C, _jax_variables('aumn'))):
    with pytest.raises(ValueError) as e:
      build()
    assert str(e.value) == expected


@requires_torch
def test_a_config_key_the_twin_does_not_know_is_refused_where_it_enters():
  """A field added to the config (a new tweak) is refused until the twin mirrors it."""
  config = _config(*DEFAULT)
  config.memory.rule = 'ema'
  with pytest.raises(ValueError, match=r"^config\.memory\.rule='ema': not implemented by the "
                     r'PyTorch twin \(benchmarks/torch_aumn\.py\)$'):
    torch_aumn.create_model(config, C)
  out, batch, _ = _function_cases()['losses.total_loss'][0]
  config = _config(*DEFAULT)
  config.loss.lambda_new = 0.5
  with pytest.raises(ValueError, match=r'^config\.loss\.lambda_new=0\.5: not implemented'):
    torch_aumn.total_loss(_to_torch(out), _to_torch(batch), config.loss)
  config = _config(*DEFAULT)
  config.optim.schedule = 'cosine'
  with pytest.raises(ValueError, match=r"^config\.optim\.schedule='cosine': not implemented"):
    torch_aumn.make_optimizer(torch_aumn.create_model(config, C), config.optim)
  config = _config(*DEFAULT)  # a field the twin knows, a value it does not mirror
  config.optim.cosine_steps = 300
  with pytest.raises(ValueError, match=r'^config\.optim\.cosine_steps=300: not implemented'):
    torch_aumn.make_optimizer(torch_aumn.create_model(config, C), config.optim)
