"""Action-unit memory as pure functions: bank init, both unit attentions, writing, adapting,
the stored-bank update and the unit-specific classifiers (SPEC.md §2.3-2.5).

Everything here is a jnp function of explicit arrays, so a research tweak (another update rule,
another attention form) is an edit of one function. Shapes follow SPEC's letters: B videos,
T snippets, D embedding width, L units, C1 = C + 1 classes (background last).

Deliberately not here: parameters (the Flax module in models.py owns the projections Wk, Wq,
Qr, Kr, the gate and the unit classifiers and passes their outputs in), losses (losses.py), and
anything about devices: sums over the batch axis are plain jnp sums, which under jit with a
batch-sharded input are already global — no collectives.
"""
import jax
import jax.numpy as jnp

# Safe-norm epsilon. Its square (1e-8) is below float32 resolution at 1, so normalising a unit
# row does not shrink it (repeated bank updates stay on the sphere up to rounding), while the
# gradient at an exactly-zero vector (padding, all-zero ReLU snippets) is bounded by 1/eps
# instead of the NaN of a plain norm.
NORM_EPS = 1e-4
# Added to attention masses before dividing: a unit that claimed nothing gets weight 0, not 0/0.
MASS_EPS = 1e-6


def safe_normalize(x, axis=-1, eps=NORM_EPS):
  """x / sqrt(|x|^2 + eps^2): exactly 0 for x = 0, finite gradient everywhere."""
  return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps * eps)


def cosine(x_BxTxD, y_xLxD):
  """Cosines [B, T, L] between snippet vectors and unit vectors ([L, D] shared or [B, L, D])."""
  # matmul broadcasts a shared [L, D] bank against the batch without copying it B times.
  return jnp.matmul(safe_normalize(x_BxTxD),
                    jnp.swapaxes(safe_normalize(y_xLxD), -1, -2))


def init_bank(rng, num_units, dim):
  """Random unit directions [L, D] (pairwise |cos| ~ 1/sqrt(D): a diverse start)."""
  return safe_normalize(jax.random.normal(rng, (num_units, dim), jnp.float32))


def center(h_BxTxD, mask_BxT):
  """Subtracts each video's masked mean over valid snippets; padded snippets stay exactly 0.

  Non-negative ReLU features share one dominant direction that every cosine sees, so without
  this every unit's cosine to every snippet is nearly the same (SPEC §9: memory collapse).
  """
  m = mask_BxT[..., None]
  mean_Bx1xD = (jnp.sum(h_BxTxD * m, axis=1, keepdims=True)
                / jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0))
  return (h_BxTxD - mean_Bx1xD) * m


def update_attention(keys_BxTxD, unit_queries_LxD, mask_BxT, tau_u):
  """Attention 1, units compete for snippets: R = softmax_l(cos(H Wk, M Wq) / tau_u).

  Args:
    keys_BxTxD: projected snippet features H Wk (padded snippets 0).
    unit_queries_LxD: projected stored bank M Wq ([L, D] or per video [B, L, D]).
    mask_BxT: 1 for valid snippets.
    tau_u: temperature of the cosine logits.

  Returns:
    (r_BxTxL, cos_BxTxL): R is a distribution over units at valid snippets and 0 at padding.
  """
  cos_BxTxL = cosine(keys_BxTxD, unit_queries_LxD)
  r_BxTxL = jax.nn.softmax(cos_BxTxL / tau_u, axis=-1) * mask_BxT[..., None]
  return r_BxTxL, cos_BxTxL


def write_units(values_BxTxD, r_BxTxL, fg_BxT, mask_BxT):
  """What each unit read from a video: its foreground-weighted claimed mean, as a direction.

  n_l = sum_t m_t a_t R_tl;  U_l = normalize(sum_t m_t a_t R_tl H_t / (n_l + eps)).

  Returns:
    (units_BxLxD, mass_BxL).
  """
  w_BxTxL = r_BxTxL * (fg_BxT * mask_BxT)[..., None]
  mass_BxL = jnp.sum(w_BxTxL, axis=1)
  sums_BxLxD = jnp.einsum('btl,btd->bld', w_BxTxL, values_BxTxD)
  units_BxLxD = safe_normalize(sums_BxLxD / (mass_BxL[..., None] + MASS_EPS))
  return units_BxLxD, mass_BxL


def adapt_memory(bank_LxD, units_BxLxD, gate_BxL):
  """Video-adapted memory M~_l = normalize(M_l + g_l (U_l - M_l)), [B, L, D] on the sphere."""
  g = gate_BxL[..., None]
  return safe_normalize(bank_LxD[None] + g * (units_BxLxD - bank_LxD[None]))


def update_bank(bank_LxD, adapted_BxLxD, mass_BxL, momentum):
  """Stored-bank step: each unit moves toward what the batch wrote, in proportion to its mass.

  M_l <- normalize(M_l + eta * sum_b n_bl (M~_bl - M_l) / (sum_b n_bl + eps)).
  The sums over b run over the whole (global) batch; a unit with zero mass does not move.
  No gradient flows through this: the bank is state, not a parameter.
  """
  adapted_BxLxD = jax.lax.stop_gradient(adapted_BxLxD)
  mass_BxL = jax.lax.stop_gradient(mass_BxL)
  bank_LxD = jax.lax.stop_gradient(bank_LxD)
  total_Lx1 = jnp.sum(mass_BxL, axis=0)[:, None]
  pull_LxD = (jnp.einsum('bl,bld->ld', mass_BxL, adapted_BxLxD)
              - total_Lx1 * bank_LxD) / (total_Lx1 + MASS_EPS)
  moved_LxD = safe_normalize(bank_LxD + momentum * pull_LxD)
  # Bit-exact for units nobody wrote to (renormalising alone would move them by rounding).
  return jnp.where(total_Lx1 > 0, moved_LxD, bank_LxD)


def read_attention(queries_BxTxD, unit_keys_BxLxD, mask_BxT, tau):
  """Attention 2, snippets read the units: A = softmax_l(cos(H Qr, M~ Kr) / tau), 0 at padding."""
  cos_BxTxL = cosine(queries_BxTxD, unit_keys_BxLxD)
  return jax.nn.softmax(cos_BxTxL / tau, axis=-1) * mask_BxT[..., None]


def unit_classify(attn_BxTxL, z_BxTxD, kernel_LxDxC, bias_LxC):
  """Action-unit-specific classifiers S_t = sum_l A_tl (Z_t W_l + b_l), split in two parts.

  Returns (weighted_BxTxC, bias_BxTxC) with S = weighted + bias. The split lets the suppressed
  branch reuse this pass: S(a * Z)_t = a_t * weighted_t + bias_t, since the features enter
  linearly and A is shared by both branches (SPEC §2.6).

  Cost: any exact evaluation needs B*T*L*D*C1 multiply-adds (each snippet meets every unit's
  full classifier). Computing Z @ [W_1 .. W_L] as one [D, L*C1] matmul reaches that minimum
  with a [B, T, L*C1] intermediate (16x750x64x21 floats = 64 MB at THUMOS shapes), then the
  contraction with A is B*T*L*C1. The alternative (A_t outer Z_t) @ W_flat has the same
  matmul cost but a [B, T, L*D] intermediate 100x larger (6.3 GB), and mixing the classifiers
  per snippet (sum_l A_tl W_l) materialises [B, T, D, C1].
  """
  num_units, dim, num_classes = kernel_LxDxC.shape
  w_DxLC = jnp.transpose(kernel_LxDxC, (1, 0, 2)).reshape(dim, num_units * num_classes)
  logits_BxTxLxC = jnp.matmul(z_BxTxD, w_DxLC).reshape(
      z_BxTxD.shape[:2] + (num_units, num_classes))
  weighted_BxTxC = jnp.einsum('btl,btlc->btc', attn_BxTxL, logits_BxTxLxC)
  bias_BxTxC = jnp.matmul(attn_BxTxL, bias_LxC)
  return weighted_BxTxC, bias_BxTxC


def unit_context_logits(attn_BxTxL, adapted_BxLxD, mass_BxL, kernel_LxDxC):
  """Unit classifiers that read the video (config.model.unit_context; docs/method.md §13).

  c_b = sqrt(D) normalize(sum_l n_bl M~_bl): the video's foreground as the memory saw it, the
  adapted units weighted by the mass each claimed (0 for a video with no mass), at rms 1 per
  entry (a LayerNormed vector's scale: at norm 1 the V_l, moved ~lr per step by Adam, could
  add at most ~0.1 to a logit after 300 steps). Returns the [B, T, C]
  logits sum_l A_tl (c_b V_l): each unit has its own classifier of the video's summary, so a
  unit that several classes share can vote for the class its video is of. Cost B*L*D*C, no
  [B, T, D] intermediate.
  """
  dim = adapted_BxLxD.shape[-1]
  context_BxD = dim ** 0.5 * safe_normalize(jnp.einsum('bl,bld->bd', mass_BxL, adapted_BxLxD))
  per_unit_BxLxC = jnp.einsum('bd,ldc->blc', context_BxD, kernel_LxDxC)
  return jnp.einsum('btl,blc->btc', attn_BxTxL, per_unit_BxLxC)


def mean_abs_offdiag_cos(rows_xLxD):
  """Mean |cos| between distinct rows ([L, D] or [B, L, D] averaged over B): 1 = collapsed."""
  n = safe_normalize(rows_xLxD)
  gram = jnp.abs(jnp.matmul(n, jnp.swapaxes(n, -1, -2)))
  num_units = rows_xLxD.shape[-2]
  off = (jnp.sum(gram, axis=(-2, -1)) - jnp.trace(gram, axis1=-2, axis2=-1))
  return jnp.mean(off / (num_units * (num_units - 1)))
