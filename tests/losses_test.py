"""losses.py against an independent NumPy (plain loops) computation of SPEC §3."""
import functools
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest
from aumn_jax import losses

# The cases are flat dicts (what the NumPy reference reads); the losses take models.Outputs.
_typed = conftest.outputs_from_flat

B, T, L, D, C = 2, 5, 3, 4, 2
C1 = C + 1


def _cfg(div=1.0, hom=0.1, sp=0.1, read=0.2, guide=0.3, guide_steps=0):
  return ml_collections.ConfigDict(dict(lambda_div=div, lambda_hom=hom, lambda_sp=sp,
                                        lambda_read=read, lambda_guide=guide,
                                        guide_steps=guide_steps, guide_classes='all',
                                        guide_form='l1', guide_center=False,
                                        guide_center_steps=0))


@functools.partial(jax.jit, static_argnames=('guide_classes', 'guide_form', 'guide_center'))
def _total_loss(out, batch, lambdas, step, guide_classes, guide_form, guide_center):
  # The weights and the step enter as traced scalars, so one compile per head serves every test.
  return losses.total_loss(_typed(out), batch, types.SimpleNamespace(
      guide_classes=guide_classes, guide_form=guide_form, guide_center=guide_center, **lambdas),
                           step)


def _loss(out, batch, cfg, step=0):
  cfg = dict(cfg)
  static = cfg.pop('guide_classes'), cfg.pop('guide_form'), cfg.pop('guide_center')
  return _total_loss(out, batch, {k: jnp.float32(v) for k, v in cfg.items()}, jnp.int32(step),
                     *static)


def _softmax(z):
  e = np.exp(z - np.max(z))
  return e / e.sum()


def _hand_made(head='aumn'):
  """A tiny batch: video 0 has 5 valid snippets, video 1 has 3 (2 padded with garbage)."""
  rng = np.random.default_rng(0)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.float32)
  garbage = 1e3 * (1 - mask)   # padded entries are junk a correct loss must ignore
  out = {
      'cas': rng.normal(size=(B, T, C1)).astype(np.float32) + garbage[..., None],
      'cas_supp': rng.normal(size=(B, T, C1)).astype(np.float32),
      'fg': (rng.uniform(0.1, 0.9, size=(B, T)) + garbage).astype(np.float32),
      'video_logits': rng.normal(size=(B, C1)).astype(np.float32),
      'video_logits_supp': rng.normal(size=(B, C1)).astype(np.float32),
  }
  if head == 'aumn':
    out.update({
        'update_attn': rng.dirichlet(np.ones(L), size=(B, T)).astype(np.float32),
        'update_cos': rng.uniform(-1, 1, size=(B, T, L)).astype(np.float32),
        'read_attn': rng.dirichlet(np.ones(L), size=(B, T)).astype(np.float32),
        'memory_adapted': rng.normal(size=(B, L, D)).astype(np.float32),
        'mass': rng.uniform(0, 2, size=(B, L)).astype(np.float32),
    })
  batch = {'labels': np.array([[1, 0], [1, 1]], np.float32), 'mask': mask}
  return out, batch


def _reference(out, batch):
  """SPEC §3 with loops, written independently of losses.py."""
  y, m = batch['labels'], batch['mask']
  cls = 0.0
  for b in range(B):
    t_base = np.append(y[b], 1.0)
    t_base /= t_base.sum()
    t_supp = np.append(y[b], 0.0)
    t_supp /= t_supp.sum()
    p = _softmax(out['video_logits'][b])
    q = _softmax(out['video_logits_supp'][b])
    cls += -np.sum(t_base * np.log(p)) - np.sum(t_supp * np.log(q))
  cls /= B
  fg_sum, n_valid = 0.0, 0.0
  for b in range(B):
    for t in range(T):
      if m[b, t]:
        fg_sum += out['fg'][b, t]
        n_valid += 1
  guide = 0.0
  for b in range(B):
    for t in range(T):
      if m[b, t]:
        p_bg = _softmax(out['cas'][b, t])[-1]
        guide += abs(1.0 - out['fg'][b, t] - p_bg)
  ref = {'loss_cls': cls, 'loss_sp': fg_sum / n_valid, 'loss_div': 0.0, 'loss_hom': 0.0,
         'loss_read': 0.0, 'loss_guide': guide / n_valid}
  if 'read_attn' not in out:
    return ref

  div = 0.0
  for b in range(B):
    rows = [v / np.linalg.norm(v) for v in out['memory_adapted'][b]]
    for i in range(L):
      for j in range(L):
        div += (rows[i] @ rows[j] - (1.0 if i == j else 0.0)) ** 2 / L ** 2
  ref['loss_div'] = div / B

  hom = 0.0
  for b in range(B):
    num = den = 0.0
    for t in range(T):
      w = m[b, t] * out['fg'][b, t]
      if not m[b, t]:
        continue
      num += w * sum(out['update_attn'][b, t, l] * (1 - out['update_cos'][b, t, l])
                     for l in range(L))
      den += w
    hom += num / den
  ref['loss_hom'] = hom / B

  ent_sum, marginal = 0.0, np.zeros(L)
  for b in range(B):
    for t in range(T):
      if m[b, t]:
        a = out['read_attn'][b, t]
        ent_sum += -np.sum(a * np.log(a))
        marginal += a
  marginal /= n_valid
  ref['loss_read'] = ent_sum / n_valid - (-np.sum(marginal * np.log(marginal)))
  return ref


@pytest.mark.parametrize('head', ['aumn', 'mil'])
def test_terms_match_numpy_reference(head):
  out, batch = _hand_made(head)
  loss, aux = _loss(out, batch, _cfg())
  ref = _reference(out, batch)
  for k, v in ref.items():
    np.testing.assert_allclose(float(aux[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)
  want = (ref['loss_cls'] + 1.0 * ref['loss_div'] + 0.1 * ref['loss_hom'] + 0.1 * ref['loss_sp']
          + 0.2 * ref['loss_read'] + 0.3 * ref['loss_guide'])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  if head == 'mil':
    assert float(aux['loss_div']) == float(aux['loss_hom']) == float(aux['loss_read']) == 0.0


@pytest.mark.parametrize('term', ['div', 'hom', 'sp', 'read', 'guide'])
def test_each_lambda_zero_drops_its_term(term):
  out, batch = _hand_made()
  full, aux = _loss(out, batch, _cfg())
  off, _ = _loss(out, batch, _cfg(**{term: 0.0}))
  weight = {'div': 1.0, 'hom': 0.1, 'sp': 0.1, 'read': 0.2, 'guide': 0.3}[term]
  np.testing.assert_allclose(float(off), float(full) - weight * float(aux['loss_' + term]),
                             rtol=1e-6)
  assert abs(float(aux['loss_' + term])) > 1e-3    # the term was really there
  only_cls, _ = _loss(out, batch, _cfg(0.0, 0.0, 0.0, 0.0, 0.0))
  np.testing.assert_allclose(float(only_cls), float(aux['loss_cls']), rtol=1e-6)


def test_guide_over_the_video_classes_matches_loops():
  """guide_classes='video': p_bg is the softmax over the video's own classes and background."""
  out, batch = _hand_made('mil')
  cfg = _cfg()
  cfg.guide_classes = 'video'
  _, aux = _loss(out, batch, cfg)
  y, m = batch['labels'], batch['mask']
  total = n = 0.0
  for b in range(B):
    cols = [c for c in range(C) if y[b, c] > 0] + [C]
    for t in range(T):
      if m[b, t]:
        p_bg = _softmax(out['cas'][b, t, cols])[-1]
        total += abs(1.0 - out['fg'][b, t] - p_bg)
        n += 1
  np.testing.assert_allclose(float(aux['loss_guide']), total / n, rtol=1e-5)
  _, aux_all = _loss(out, batch, _cfg())
  assert abs(float(aux['loss_guide']) - float(aux_all['loss_guide'])) > 1e-3


def test_bce_guide_matches_loops_and_pulls_a_dead_attention_back():
  """guide_form='bce': -[t log a + (1 - t) log(1 - a)], t = 1 - p_bg held fixed."""
  out, batch = _hand_made('mil')
  cfg = _cfg()
  cfg.guide_form = 'bce'
  _, aux = _loss(out, batch, cfg)
  m = batch['mask']
  total = n = 0.0
  for b in range(B):
    for t in range(T):
      if m[b, t]:
        target = 1.0 - _softmax(out['cas'][b, t])[-1]
        a = out['fg'][b, t]
        total += -(target * math.log(a) + (1 - target) * math.log(1 - a))
        n += 1
  np.testing.assert_allclose(float(aux['loss_guide']), total / n, rtol=1e-5)
  # The pull on a's logit where a has died: BCE's is a - t (finite), L1's is ~a (1 - a) -> 0.
  logit = jnp.full((B, T), -12.0)
  def guide_of(form, lg):
    o = dict(out, fg=jax.nn.sigmoid(lg) * batch['mask'])
    return losses.guide_loss(_typed(o), batch['mask'], None, form)
  g_bce = jax.grad(lambda lg: guide_of('bce', lg))(logit)
  g_l1 = jax.grad(lambda lg: guide_of('l1', lg))(logit)
  assert float(jnp.max(jnp.abs(g_l1))) < 1e-5 < 1e-2 < float(jnp.min(-g_bce[0]))
  # and no gradient reaches the base branch through the target
  g_cas = jax.grad(lambda c: losses.guide_loss(_typed(dict(out, cas=c)), batch['mask'], None,
                                                   'bce'))(
      jnp.asarray(out['cas']))
  assert float(jnp.max(jnp.abs(g_cas))) == 0.0


def test_centred_guide_matches_loops_and_ignores_a_column_raised_on_every_snippet():
  """guide_center: each CAS column minus its mean over the video's valid snippets, then the
  softmax over the video's classes + background; BCE against the fixed 1 - p_bg."""
  out, batch = _hand_made('mil')
  cfg = _cfg()
  cfg.guide_form, cfg.guide_classes, cfg.guide_center = 'bce', 'video', True
  _, aux = _loss(out, batch, cfg)
  m, labels = batch['mask'], batch['labels']
  total = n = 0.0
  for b in range(B):
    valid = [t for t in range(T) if m[b, t]]
    mean = np.mean([out['cas'][b, t] for t in valid], axis=0)
    keep = [k for k in range(C) if labels[b, k] > 0] + [C]
    for t in valid:
      target = 1.0 - _softmax((out['cas'][b, t] - mean)[keep])[-1]
      a = out['fg'][b, t]
      total += -(target * math.log(a) + (1 - target) * math.log(1 - a))
      n += 1
  np.testing.assert_allclose(float(aux['loss_guide']), total / n, rtol=1e-5)
  # A background column raised on every snippet of a video (the early base branch) moves the
  # uncentred target toward 0 everywhere and leaves the centred one as it was.
  raised = np.array(out['cas'])
  raised[0, :, C] += 5.0
  _, moved = _loss(dict(out, cas=raised), batch, cfg)
  np.testing.assert_allclose(float(moved['loss_guide']), float(aux['loss_guide']), rtol=1e-6)
  cfg.guide_center = False
  _, plain = _loss(out, batch, cfg)
  _, plain_raised = _loss(dict(out, cas=raised), batch, cfg)
  assert abs(float(plain_raised['loss_guide']) - float(plain['loss_guide'])) > 1e-2


def test_guide_centred_for_the_first_guide_center_steps_only():
  """loss.guide_center_steps=K: the centred guide at steps < K, the uncentred one from K on;
  guide_center=True: centred at every step."""
  out, batch = _hand_made('mil')
  cfg = _cfg()
  cfg.guide_form, cfg.guide_classes = 'bce', 'video'
  _, plain = _loss(out, batch, cfg)
  cfg.guide_center = True
  _, centred = _loss(out, batch, cfg, step=1000)
  assert abs(float(centred['loss_guide']) - float(plain['loss_guide'])) > 1e-3
  cfg.guide_center, cfg.guide_center_steps = False, 5
  got = [float(_loss(out, batch, cfg, step=s)[1]['loss_guide']) for s in (0, 4, 5, 50)]
  want = [float(centred['loss_guide'])] * 2 + [float(plain['loss_guide'])] * 2
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_guide_weight_decays_linearly_over_guide_steps():
  cfg = types.SimpleNamespace(lambda_guide=0.8, guide_steps=100)
  got = [float(losses.guide_weight(cfg, s)) for s in (0, 25, 100, 500)]
  np.testing.assert_allclose(got, [0.8, 0.6, 0.0, 0.0], atol=1e-7)
  constant = types.SimpleNamespace(lambda_guide=0.8, guide_steps=0)
  assert float(losses.guide_weight(constant, 10_000)) == np.float32(0.8)


def test_unknown_guide_classes_refused():
  out, batch = _hand_made('mil')
  cfg = types.SimpleNamespace(**_cfg())
  cfg.guide_classes = 'some'
  with pytest.raises(ValueError, match="guide_classes='some'"):
    losses.total_loss(_typed(out), batch, cfg)


def test_aux_keys_fixed_per_head():
  aumn, _ = _hand_made('aumn')
  mil, batch = _hand_made('mil')
  _, aux_a = _loss(aumn, batch, _cfg())
  _, aux_m = _loss(mil, batch, _cfg())
  base = {'loss_cls', 'loss_div', 'loss_hom', 'loss_sp', 'loss_read', 'loss_guide',
          'diag_fg_mean', 'diag_bg_prob_action', 'diag_bg_prob_background'}
  assert set(aux_m) == base
  assert set(aux_a) == base | {
      'diag_read_entropy', 'diag_read_entropy_ratio', 'diag_read_marginal_entropy_ratio',
      'diag_read_usage_cos', 'diag_update_entropy_ratio', 'diag_update_usage_cos',
      'diag_units_in_use', 'diag_memory_abs_cos', 'diag_memory_cross_video_cos'}
  assert all(np.shape(v) == () for v in aux_a.values())


def test_diagnostics_flag_a_collapsed_memory():
  out, batch = _hand_made()
  out['read_attn'] = np.full((B, T, L), 1.0 / L, np.float32)
  out['update_attn'] = np.full((B, T, L), 1.0 / L, np.float32)
  out['memory_adapted'] = np.tile(out['memory_adapted'][:1, :1], (B, L, 1))
  out['mass'] = np.array([[5.0, 0.0, 0.0], [4.0, 0.01, 0.0]], np.float32)
  _, aux = _loss(out, batch, _cfg())
  np.testing.assert_allclose(float(aux['diag_read_entropy']), math.log(L), rtol=1e-5)
  np.testing.assert_allclose(float(aux['diag_read_entropy_ratio']), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(aux['diag_update_entropy_ratio']), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(aux['diag_memory_abs_cos']), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(aux['diag_memory_cross_video_cos']), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(aux['diag_units_in_use']), 1.0 / L, rtol=1e-6)


def test_bg_prob_diagnostic_separates_when_fg_does():
  out, batch = _hand_made('mil')
  out['fg'] = np.array([[0.99, 0.01, 0.01, 0.99, 0.5], [0.01, 0.99, 0.5, 0.5, 0.5]], np.float32)
  cas = np.zeros((B, T, C1), np.float32)
  cas[..., -1] = np.where(out['fg'] > 0.9, -5.0, 5.0)     # background column follows 1 - a
  out['cas'] = cas
  _, aux = _loss(out, batch, _cfg())
  assert float(aux['diag_bg_prob_action']) < 0.5 < float(aux['diag_bg_prob_background'])


def test_gradients_finite_with_padding_and_saturated_attention():
  out, batch = _hand_made()
  out['read_attn'][0, 0] = np.array([1.0, 0.0, 0.0])       # exactly one-hot row
  out['read_attn'][1, 3:] = 0.0                             # masked rows are exactly 0
  out['update_attn'][1, 3:] = 0.0
  grads = jax.jit(jax.grad(lambda o: losses.total_loss(_typed(o), batch, _cfg())[0]))(out)
  for k, g in grads.items():
    assert np.all(np.isfinite(np.asarray(g))), k
