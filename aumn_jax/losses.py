"""Training losses of AUMN (SPEC.md §3) and the diagnostics that reveal its failure modes (§9).

total_loss(out, batch, loss_cfg) -> (loss, aux) is the one entry point; each term is its own
function of the model outputs (models.Outputs) so a research tweak swaps one function. All
means are masked (padded snippets never count) and all batch sums are plain jnp sums: global
under jit.

Deliberately not here: weight decay (the optimizer adds it), anything that reads parameters or
the stored bank (they are not outputs), and NumPy.
"""
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp

from aumn_jax import memory
from aumn_jax import models

_EPS = 1e-6
# A unit is "in use" when it claims more than this fraction of its uniform share of the
# batch's foreground mass (1/L): a unit at 10 % of uniform is effectively dead.
_IN_USE_SHARE = 0.1


def _entropy(p, axis=-1):
  # Clipped log: 0 * log 0 = 0 with a finite gradient. (xlogy's gradient is log 0 = -inf at the
  # exact zeros of masked attention rows, and -inf times the mask's 0 is NaN.)
  return -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=axis)


def _masked_mean(x_BxT, mask_BxT):
  return jnp.sum(x_BxT * mask_BxT) / jnp.maximum(jnp.sum(mask_BxT), 1.0)


def classification_loss(out: models.Outputs, labels_BxC):
  """CE(p, [y, 1]) + CE(p', [y, 0]), targets normalised to sum 1, mean over videos."""
  ones = jnp.ones_like(labels_BxC[:, :1])
  t_base = jnp.concatenate([labels_BxC, ones], axis=-1)
  t_supp = jnp.concatenate([labels_BxC, 0.0 * ones], axis=-1)
  t_base = t_base / jnp.sum(t_base, axis=-1, keepdims=True)
  t_supp = t_supp / jnp.maximum(jnp.sum(t_supp, axis=-1, keepdims=True), _EPS)
  ce = lambda t, logits: -jnp.sum(t * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return jnp.mean(ce(t_base, out.video_logits) + ce(t_supp, out.video_logits_supp))


def diversity_loss(adapted_BxLxD):
  """||M^ M^T - I||_F^2 / L^2 on the row-normalised adapted memory, mean over videos."""
  n = memory.safe_normalize(adapted_BxLxD)
  gram = jnp.matmul(n, jnp.swapaxes(n, -1, -2))
  num_units = adapted_BxLxD.shape[-2]
  return jnp.mean(jnp.sum(jnp.square(gram - jnp.eye(num_units)), axis=(-2, -1))
                  / num_units ** 2)


def homogeneity_loss(update_attn_BxTxL, update_cos_BxTxL, fg_BxT, mask_BxT):
  """sum_t m a sum_l R (1 - cos(H Wk, M~ Wq)) / sum_t m a, per video, mean over videos."""
  w_BxT = fg_BxT * mask_BxT
  spread_BxT = jnp.sum(update_attn_BxTxL * (1.0 - update_cos_BxTxL), axis=-1)
  per_video = jnp.sum(w_BxT * spread_BxT, axis=1) / (jnp.sum(w_BxT, axis=1) + _EPS)
  return jnp.mean(per_video)


def read_sparsity(read_attn_BxTxL, mask_BxT):
  """mean_t H(A_t) - H(mean_{b,t} A_bt) over valid snippets (few units each, many in all)."""
  conditional = _masked_mean(_entropy(read_attn_BxTxL), mask_BxT)
  marginal_L = (jnp.sum(read_attn_BxTxL * mask_BxT[..., None], axis=(0, 1))
                / jnp.maximum(jnp.sum(mask_BxT), 1.0))
  return conditional - _entropy(marginal_L)


def foreground_sparsity(fg_BxT, mask_BxT):
  """mean_t a_t over valid snippets: actions are a small part of a video (BaS-Net's L1)."""
  return _masked_mean(fg_BxT, mask_BxT)


GUIDE_CLASSES = ('all', 'video')
GUIDE_FORMS = ('l1', 'bce')


def guide_loss(out: models.Outputs, mask_BxT, labels_BxC=None, form='l1', center=False):
  """mean_t |1 - a_t - p_bg(t)| over valid snippets: the foreground attention agrees with the
  base branch's per-snippet background probability (HAM-Net / CO2-Net's guide loss). The base
  branch learns p_bg from the video-level targets (every video has background), so a gets a
  per-snippet target that does not vanish when a does. No stop-gradient, as in those codes:
  the term also pulls the base branch's background column toward 1 - a.

  labels_BxC given (loss.guide_classes='video'): p_bg is the softmax over the background and
  the video's own classes only, "is this snippet more background than any action the video
  holds". Over all C + 1 columns the absent classes' mass counts as foreground: the target
  starts at 1 - 1/(C + 1) (a saturates) and stays high on background (docs/method.md §7).

  form='bce': binary cross-entropy of a against the target t = 1 - p_bg, held fixed
  (stop-gradient). Its gradient on a's logit is a - t, which does not vanish where a has
  died or saturated; the L1's is sign(.) * a (1 - a), which does.

  center=True (guide_centred: loss.guide_center, or a step < loss.guide_center_steps; a bool
  or a traced boolean scalar): each column of the CAS minus its mean over the video's valid
  snippets before the softmax, so p_bg says where a snippet is more background than the video's
  average snippet. Early in training the base branch raises the background column on every
  snippet alike (every video's target holds background, few hold a given class); uncentred,
  that sends the target 1 - p_bg toward 0 everywhere and a follows (docs/method.md §9).
  """
  m_BxTx1 = mask_BxT[..., None]
  mean_Bx1xC1 = (jnp.sum(out.cas * m_BxTx1, axis=1, keepdims=True)
                 / jnp.maximum(jnp.sum(m_BxTx1, axis=1, keepdims=True), 1.0))
  logits_BxTxC1 = out.cas - jnp.where(center, mean_Bx1xC1, 0.0)
  if labels_BxC is not None:
    keep_BxC1 = jnp.concatenate([labels_BxC > 0, jnp.ones_like(labels_BxC[:, :1], bool)], -1)
    logits_BxTxC1 = jnp.where(keep_BxC1[:, None, :], logits_BxTxC1, -jnp.inf)
  p_bg_BxT = jax.nn.softmax(logits_BxTxC1, axis=-1)[..., -1]
  if form == 'l1':
    return _masked_mean(jnp.abs(1.0 - out.fg - p_bg_BxT), mask_BxT)
  target = jax.lax.stop_gradient(1.0 - p_bg_BxT)
  a = jnp.clip(out.fg, 1e-6, 1.0 - 1e-6)
  return _masked_mean(-(target * jnp.log(a) + (1.0 - target) * jnp.log1p(-a)), mask_BxT)


def guide_weight(loss_cfg: Any, step) -> jnp.ndarray:
  """lambda_guide, decayed linearly to 0 over the first guide_steps steps (0: constant).

  The guide is what keeps a alive early, while the base branch has not yet found the
  background; once it has, its target 1 - p_bg is a poorer ranking of snippets than the
  MIL losses learn on their own (docs/method.md §7), so it can be let go."""
  steps = jnp.asarray(loss_cfg.guide_steps, jnp.float32)
  frac = jnp.clip(1.0 - jnp.asarray(step, jnp.float32) / jnp.maximum(steps, 1.0), 0.0, 1.0)
  return loss_cfg.lambda_guide * jnp.where(steps > 0, frac, 1.0)


def guide_centred(loss_cfg: Any, step) -> jnp.ndarray:
  """Whether the guide's p_bg is centred at this step: always with guide_center, else for
  the first guide_center_steps steps (0: never).

  Early the uncentred target follows the background column the base branch raises on every
  snippet and a dips with it; once the base branch has found where the background is, the
  uncentred target ranks snippets across videos better (docs/method.md §9)."""
  return jnp.logical_or(loss_cfg.guide_center,
                        jnp.asarray(step) < loss_cfg.guide_center_steps)


def diagnostics(out: models.Outputs, mask_BxT) -> Dict[str, jnp.ndarray]:
  """Scalars that reveal the failure modes of SPEC §9 (no gradient, logging only).

  Weak supervision has no snippet labels, so "action" vs "background" snippets are weighted by
  the foreground attention a and by 1 - a (the model's own actionness, the best proxy the
  batch offers; compare with ground truth offline).
  """
  out = jax.lax.stop_gradient(out)
  m = mask_BxT
  fg = out.fg
  w_act, w_bg = fg * m, (1.0 - fg) * m
  wmean = lambda x, w: jnp.sum(x * w) / (jnp.sum(w) + _EPS)
  p_bg_BxT = jax.nn.softmax(out.cas, axis=-1)[..., -1]
  diag = {
      'diag_fg_mean': _masked_mean(fg, m),
      # Base branch: p(background) should be high where a is low and low where a is high.
      'diag_bg_prob_action': wmean(p_bg_BxT, w_act),
      'diag_bg_prob_background': wmean(p_bg_BxT, w_bg),
  }
  if out.memory is None:
    return diag

  read, upd, mass = out.memory.read_attn, out.memory.update_attn, out.memory.mass
  num_units = read.shape[-1]
  log_l = jnp.log(float(num_units))

  def usage_cos(attn_BxTxL):
    u_act = jnp.einsum('bt,btl->l', w_act, attn_BxTxL)
    u_bg = jnp.einsum('bt,btl->l', w_bg, attn_BxTxL)
    return jnp.sum(memory.safe_normalize(u_act) * memory.safe_normalize(u_bg))

  read_entropy = _masked_mean(_entropy(read), m)
  read_marginal = (jnp.sum(read * m[..., None], axis=(0, 1)) / jnp.maximum(jnp.sum(m), 1.0))
  share_L = jnp.sum(mass, axis=0) / (jnp.sum(mass) + _EPS)
  adapted = out.memory.memory_adapted
  # Same unit, different videos: 1 means M~ ignores the video (the adaptation is dead).
  unit_dirs = memory.safe_normalize(adapted)
  mean_dir_LxD = jnp.mean(unit_dirs, axis=0)
  batch = adapted.shape[0]
  cross_video = ((jnp.sum(jnp.square(batch * mean_dir_LxD), axis=-1)
                  - jnp.sum(jnp.square(unit_dirs), axis=(0, -1)))
                 / max(batch * (batch - 1), 1))
  diag.update({
      'diag_read_entropy': read_entropy,
      'diag_read_entropy_ratio': read_entropy / log_l,
      'diag_read_marginal_entropy_ratio': _entropy(read_marginal) / log_l,
      'diag_read_usage_cos': usage_cos(read),
      'diag_update_entropy_ratio': _masked_mean(_entropy(upd), m) / log_l,
      'diag_update_usage_cos': usage_cos(upd),
      'diag_units_in_use': jnp.mean((share_L > _IN_USE_SHARE / num_units).astype(jnp.float32)),
      'diag_memory_abs_cos': memory.mean_abs_offdiag_cos(adapted),
      'diag_memory_cross_video_cos': jnp.mean(cross_video),
  })
  return diag


def total_loss(out: models.Outputs, batch, loss_cfg: Any,
               step=0) -> Tuple[jnp.ndarray, Dict[str, jnp.ndarray]]:
  """L = L_cls + lambda_div L_div + lambda_hom L_hom + lambda_sp L_fg + lambda_read L_read
  + lambda_guide(step) L_guide.

  SPEC §3's L_sp is L_fg (foreground L1) + L_read (read sparsity); the two have their own
  weights so an ablation can tell them apart. Plus the guide loss (docs/method.md §7).

  Args:
    out: the model's outputs; the memory terms need the 'aumn' head's out.memory.
    batch: needs 'labels' [B, C] and 'mask' [B, T].
    loss_cfg: config.loss (lambda_div, lambda_hom, lambda_sp, lambda_read, lambda_guide,
      guide_form, guide_classes, guide_center, guide_center_steps, guide_steps).
    step: the training step (the guide's schedules, guide_weight and guide_centred).

  Returns:
    (loss, aux): aux holds loss_cls, loss_div, loss_hom, loss_sp (foreground L1), loss_read,
    loss_guide and the diag_* scalars. For head='mil' loss_div = loss_hom = loss_read = 0
    and the memory diagnostics are absent.
  """
  mask = batch['mask'].astype(jnp.float32)
  zero = jnp.zeros((), jnp.float32)
  loss_cls = classification_loss(out, batch['labels'])
  loss_sp = foreground_sparsity(out.fg, mask)
  loss_div = loss_hom = loss_read = zero
  if out.memory is not None:
    mem = out.memory
    loss_div = diversity_loss(mem.memory_adapted)
    loss_hom = homogeneity_loss(mem.update_attn, mem.update_cos, out.fg, mask)
    loss_read = read_sparsity(mem.read_attn, mask)
  if loss_cfg.guide_classes not in GUIDE_CLASSES:
    raise ValueError(f'config.loss.guide_classes={loss_cfg.guide_classes!r}: not one of '
                     f'{GUIDE_CLASSES}')
  if loss_cfg.guide_form not in GUIDE_FORMS:
    raise ValueError(f'config.loss.guide_form={loss_cfg.guide_form!r}: not one of {GUIDE_FORMS}')
  loss_guide = guide_loss(out, mask,
                          batch['labels'] if loss_cfg.guide_classes == 'video' else None,
                          loss_cfg.guide_form, guide_centred(loss_cfg, step))
  loss = (loss_cls + loss_cfg.lambda_div * loss_div + loss_cfg.lambda_hom * loss_hom
          + loss_cfg.lambda_sp * loss_sp + loss_cfg.lambda_read * loss_read
          + guide_weight(loss_cfg, step) * loss_guide)
  aux = {'loss_cls': loss_cls, 'loss_div': loss_div, 'loss_hom': loss_hom, 'loss_sp': loss_sp,
         'loss_read': loss_read, 'loss_guide': loss_guide}
  aux.update(diagnostics(out, mask))
  return loss, aux
