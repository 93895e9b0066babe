"""memory.py against plain NumPy loops of SPEC §2.3-2.5 on tiny hand-made arrays."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aumn_jax import memory

B, T, D, L, C1 = 3, 7, 16, 4, 5


def _np_normalize(v):
  return v / np.sqrt(np.sum(v * v) + memory.NORM_EPS ** 2)


def _np_softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


@pytest.fixture(name='arrays')
def _arrays():
  rng = np.random.default_rng(0)
  mask = np.ones((B, T), np.float32)
  mask[1, 5:] = 0
  mask[2, 3:] = 0
  h = np.maximum(rng.normal(size=(B, T, D)), 0).astype(np.float32) * mask[..., None]
  return dict(
      h=h, mask=mask,
      keys=rng.normal(size=(B, T, D)).astype(np.float32) * mask[..., None],
      queries=rng.normal(size=(L, D)).astype(np.float32),
      fg=rng.uniform(0.05, 0.95, size=(B, T)).astype(np.float32) * mask,
      bank=np.asarray(jax.jit(memory.init_bank, static_argnums=(1, 2))(
          jax.random.PRNGKey(0), L, D)),
      gate=rng.uniform(size=(B, L)).astype(np.float32))


def test_safe_normalize_zero_vector_and_fixed_point():
  normalize = jax.jit(memory.safe_normalize)
  g = jax.jit(jax.grad(lambda x: jnp.sum(memory.safe_normalize(x) * jnp.arange(4.0))))(
      jnp.zeros(4))
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_array_equal(np.asarray(normalize(jnp.zeros(4))), 0.0)
  bank = np.asarray(jax.jit(memory.init_bank, static_argnums=(1, 2))(jax.random.PRNGKey(1), 8, 32))
  np.testing.assert_allclose(np.linalg.norm(bank, axis=-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(normalize(bank)), bank, rtol=1e-6)


def test_center_is_masked_mean_and_zero_at_padding(arrays):
  h, mask = arrays['h'], arrays['mask']
  got = np.asarray(jax.jit(memory.center)(h, mask))
  for b in range(B):
    n = int(mask[b].sum())
    np.testing.assert_allclose(got[b, :n], h[b, :n] - h[b, :n].mean(0), atol=1e-5)
    np.testing.assert_array_equal(got[b, n:], 0.0)


def test_update_attention_and_write_units_match_numpy(arrays):
  keys, queries, mask, fg, h = (arrays[k] for k in ('keys', 'queries', 'mask', 'fg', 'h'))
  tau_u = 0.1
  r, cos = jax.jit(memory.update_attention)(keys, queries, mask, tau_u)
  units, mass = jax.jit(memory.write_units)(h, r, fg, mask)
  r, cos, units, mass = map(np.asarray, (r, cos, units, mass))
  for b in range(B):
    want_mass = np.zeros(L)
    sums = np.zeros((L, D))
    for t in range(T):
      c = np.array([_np_normalize(keys[b, t]) @ _np_normalize(queries[l]) for l in range(L)])
      want_r = _np_softmax(c / tau_u) * mask[b, t]
      np.testing.assert_allclose(cos[b, t], c, atol=1e-5)
      np.testing.assert_allclose(r[b, t], want_r, atol=1e-5)
      for l in range(L):
        want_mass[l] += mask[b, t] * fg[b, t] * want_r[l]
        sums[l] += mask[b, t] * fg[b, t] * want_r[l] * h[b, t]
    np.testing.assert_allclose(mass[b], want_mass, rtol=1e-5)
    for l in range(L):
      want_u = _np_normalize(sums[l] / (want_mass[l] + memory.MASS_EPS))
      np.testing.assert_allclose(units[b, l], want_u, atol=1e-5)


def test_adapt_memory_matches_numpy_and_is_unit_norm(arrays):
  bank, gate = arrays['bank'], arrays['gate']
  units = np.asarray(memory.safe_normalize(arrays['keys'][:, :L]))
  got = np.asarray(jax.jit(memory.adapt_memory)(bank, units, gate))
  for b in range(B):
    for l in range(L):
      want = _np_normalize(bank[l] + gate[b, l] * (units[b, l] - bank[l]))
      np.testing.assert_allclose(got[b, l], want, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)


def test_update_bank_matches_numpy_and_dead_unit_stays(arrays):
  bank = arrays['bank']
  rng = np.random.default_rng(3)
  adapted = np.asarray(memory.safe_normalize(rng.normal(size=(B, L, D)).astype(np.float32)))
  mass = rng.uniform(0.1, 3.0, size=(B, L)).astype(np.float32)
  mass[:, 2] = 0.0          # unit 2 claimed nothing anywhere in the batch
  mass[0, 1] = 0.0          # unit 1 claimed nothing in video 0 only
  eta = 0.3
  update_bank = jax.jit(memory.update_bank)
  got = np.asarray(update_bank(bank, adapted, mass, eta))
  for l in range(L):
    total = mass[:, l].sum()
    pull = sum(mass[b, l] * (adapted[b, l] - bank[l]) for b in range(B)) / (
        total + memory.MASS_EPS)
    np.testing.assert_allclose(got[l], _np_normalize(bank[l] + eta * pull), atol=1e-6)
  np.testing.assert_array_equal(got[2], bank[2])
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-6)
  # A unit's step only depends on videos that gave it mass: video 0's write to unit 1 is ignored.
  adapted2 = adapted.copy()
  adapted2[0, 1] = -adapted2[0, 1]
  np.testing.assert_allclose(np.asarray(update_bank(bank, adapted2, mass, eta)), got,
                             atol=1e-7)
  assert np.max(np.abs(got[0] - bank[0])) > 1e-3          # units with mass do move


def test_read_attention_matches_numpy(arrays):
  keys, mask = arrays['keys'], arrays['mask']
  unit_keys = np.random.default_rng(4).normal(size=(B, L, D)).astype(np.float32)
  got = np.asarray(jax.jit(memory.read_attention)(keys, unit_keys, mask, 0.1))
  for b in range(B):
    for t in range(T):
      c = np.array([_np_normalize(keys[b, t]) @ _np_normalize(unit_keys[b, l])
                    for l in range(L)])
      np.testing.assert_allclose(got[b, t], _np_softmax(c / 0.1) * mask[b, t], atol=1e-5)


def test_unit_classify_matches_per_unit_loop(arrays):
  rng = np.random.default_rng(5)
  attn = rng.dirichlet(np.ones(L), size=(B, T)).astype(np.float32)
  z = arrays['h']
  kernel = rng.normal(size=(L, D, C1)).astype(np.float32)
  bias = rng.normal(size=(L, C1)).astype(np.float32)
  weighted, bias_part = map(np.asarray, jax.jit(memory.unit_classify)(attn, z, kernel, bias))
  want = np.zeros((B, T, C1))
  for b in range(B):
    for t in range(T):
      for l in range(L):
        want[b, t] += attn[b, t, l] * (z[b, t] @ kernel[l] + bias[l])
  np.testing.assert_allclose(weighted + bias_part, want, rtol=1e-4, atol=1e-4)


def test_mean_abs_offdiag_cos_extremes():
  mean_abs_cos = jax.jit(memory.mean_abs_offdiag_cos)
  same = np.tile(np.array([[1.0, 2.0, 0.0]], np.float32), (4, 1))
  np.testing.assert_allclose(float(mean_abs_cos(same)), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(mean_abs_cos(np.eye(4, dtype=np.float32))), 0.0, atol=1e-7)
