"""Flax modules of AUMN (SPEC.md §2) and its BaS-Net baseline (model.head = 'mil').

Holds the two-branch background-suppression skeleton (embedding, foreground attention,
base / suppressed class activation sequences, top-k MIL video scores) and the AUMN head:
the action-unit memory bank lives in the `memory` variable collection (state moved by
memory.update_bank when applied with train=True and mutable=['memory'], never by the
optimizer; with model.fg_norm='batch', the default, the collection also holds the skeleton's
running mean, for both heads);
the attentions and the update rule are the pure functions of memory.py.

Deliberately not here: losses (losses.py), NumPy, devices or collectives (sums over the batch
are global under jit), and localization (host code in localization.py).

Masks: padded snippets are zeroed before the conv and after it, so a valid snippet next to
padding sees exactly what it sees at the true end of the video; every attention, mass and
top-k is masked, so padding changes no output at valid positions, no video score and not the
memory update.
"""
from typing import Any, Optional

import flax.linen as nn
from flax import struct
import jax
import jax.numpy as jnp

from aumn_jax import memory

# The skeleton's switchable forms (config.model.input_norm / fg_input / fg_norm; docs/method.md §7).
INPUT_NORMS = ('none', 'layernorm', 'center')
FG_INPUTS = ('dropped', 'embedding', 'features')
FG_NORMS = ('none', 'center', 'layernorm', 'batch')
# fg_norm='batch': the running mean of a's layer input (used at eval) moves this fraction of
# the way to each training batch's mean (BatchNorm's rule; 0.9 forgets the zero start within
# ~30 of the 300 steps a battery run takes). Not a config field.
FG_MEAN_MOMENTUM = 0.9
# What the foreground attention scales in the suppressed branch (config.model.suppress;
# docs/method.md §9): 'features' S(a H) = a (H W) + b (SPEC §2);
# 'logits' a (s - min_t s) + min_t s.
SUPPRESS_FORMS = ('features', 'logits')
# How the unit classifiers W_l start (config.model.unit_init; docs/method.md §8).
UNIT_INITS = ('lecun', 'zeros')
# config.compute_dtype: the dtype of the convolution and the matmuls. Parameters, the optimizer
# state, the memory bank, normalisations, softmaxes, top-k and losses stay float32: every
# product comes back as float32.
COMPUTE_DTYPES = ('float32', 'bfloat16')


class _Dense(nn.Dense):
  """nn.Dense (same parameters and names) computed in `dtype`, its output cast to float32."""

  @nn.compact
  def __call__(self, inputs):
    return super().__call__(inputs).astype(jnp.float32)


def topk_mean(s_BxTxC, mask_BxT, ratio):
  """Per class, mean of the top-k of s over VALID t, k = max(1, floor(T_valid / ratio)).

  k differs per video under one static shape: padded positions sort last (-inf) and ranks
  >= k are masked out. A video with no valid snippet (an eval batch's padding video) scores 0.
  """
  valid = mask_BxT[..., None] > 0
  t_valid_B = jnp.sum(mask_BxT > 0, axis=1)
  k_B = jnp.maximum(1, t_valid_B // ratio)
  sorted_desc = -jnp.sort(jnp.where(valid, -s_BxTxC, jnp.inf), axis=1)
  ranks_T = jnp.arange(s_BxTxC.shape[1])
  keep = (ranks_T[None, :] < k_B[:, None]) & (ranks_T[None, :] < t_valid_B[:, None])
  total_BxC = jnp.sum(jnp.where(keep[..., None], sorted_desc, 0.0), axis=1)
  return total_BxC / k_B[:, None].astype(s_BxTxC.dtype)


class Embedding(nn.Module):
  """H = Dropout(ReLU(Conv1D_k3(X))), zero at padded snippets; also returns H before dropout.

  The k=3 convolution has one parameter layout (`conv/kernel` [3, F, D], `conv/bias` [D], as
  nn.Conv) and two exact formulations, chosen per backend for speed (`impl='auto'`):
  'conv' (XLA's convolution: 2x faster than the GEMM on CPU) and 'gemm' (one matmul over the
  three shifted copies of X, [B, T, 3F] @ [3F, D]: on an H200 cuDNN's fused conv-bias-ReLU
  forward took 16 ms at THUMOS shapes where this GEMM takes 1.1 ms, and fwd+bwd 3.7 vs 2.5 ms;
  see BENCHMARKS.md).
  """
  dim: int
  dropout: float
  input_norm: str  # 'none' | 'center' | 'layernorm' (config.model.input_norm)
  impl: str = 'auto'  # 'auto' | 'conv' | 'gemm' (an implementation choice, not a config field)
  dtype: Any = jnp.float32  # the convolution's compute dtype (config.compute_dtype)

  @nn.compact
  def __call__(self, x_BxTxF, mask_BxT, train):
    m = mask_BxT[..., None]
    # where, not multiply: garbage in padding (even NaN/Inf) must not leak into the conv.
    x_BxTxF = jnp.where(m > 0, x_BxTxF, 0.0)
    if self.input_norm == 'center':
      x_BxTxF = memory.center(x_BxTxF, mask_BxT)
    elif self.input_norm == 'layernorm':
      x_BxTxF = nn.LayerNorm(use_bias=False, use_scale=False)(x_BxTxF) * m
    elif self.input_norm != 'none':
      raise ValueError(f'config.model.input_norm={self.input_norm!r}: not one of {INPUT_NORMS}')
    h = _Conv1D3(self.dim, self.impl, self.dtype, name='conv')(x_BxTxF)
    h = nn.relu(h) * m
    return nn.Dropout(self.dropout, deterministic=not train)(h), h


class _Conv1D3(nn.Module):
  """'SAME' Conv1D with kernel size 3 over time: nn.Conv's parameters and initialisation.
  Computed in `dtype`, accumulated and returned in float32."""
  features: int
  impl: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxTxF):
    f = x_BxTxF.shape[-1]
    kernel_3xFxD = self.param('kernel', nn.initializers.lecun_normal(), (3, f, self.features))
    bias_D = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    impl = self.impl
    if impl == 'auto':
      impl = 'gemm' if jax.default_backend() == 'gpu' else 'conv'
    x_BxTxF, kernel = x_BxTxF.astype(self.dtype), kernel_3xFxD.astype(self.dtype)
    if impl == 'conv':
      y = jax.lax.conv_general_dilated(x_BxTxF, kernel, (1,), [(1, 1)],
                                       dimension_numbers=('NWC', 'WIO', 'NWC'),
                                       preferred_element_type=jnp.float32)
    elif impl == 'gemm':
      xp = jnp.pad(x_BxTxF, ((0, 0), (1, 1), (0, 0)))
      shifted_BxTx3F = jnp.concatenate([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], axis=-1)
      y = jnp.matmul(shifted_BxTx3F, kernel.reshape(3 * f, self.features),
                     preferred_element_type=jnp.float32)
    else:
      raise ValueError(f'Embedding impl={impl!r}: not one of auto, conv, gemm')
    return y + bias_D


class _Skeleton(nn.Module):
  """Shared by both heads: embedding + foreground attention a = sigmoid(Conv1D_k1(H)).

  fg_norm='center': the attention layer sees each snippet relative to its video, H - mean_t H
  (memory.center); fg_norm='batch': relative to the training batch (_batch_centred).
  H >= 0 (ReLU), so d logit / d w = H_t has the same sign in every dimension
  and snippet: one consistent push (the suppressed branch's background column early in
  training) moves all D weights the same way under Adam's normalised steps, shifting every
  logit by ~lr * sum_d H_td per step — a died in ~20 steps at D 256 and saturated at D 2048.
  Centred, the weights can only move a *within* a video; its level is the bias alone
  (docs/method.md §7).
  """
  dim: int
  dropout: float
  fg_bias_init: float
  fg_norm: str
  fg_input: str
  input_norm: str
  dtype: Any               # config.compute_dtype (models.COMPUTE_DTYPES)
  fg_hidden: int = 512  # BaS-Net's filter width (fg_input='features'); not a config field

  @nn.compact
  def __call__(self, x_BxTxF, mask_BxT, train):
    h_BxTxD, h_clean = Embedding(self.dim, self.dropout, self.input_norm, dtype=self.dtype,
                                 name='embedding')(x_BxTxF, mask_BxT, train)
    if self.fg_input == 'dropped':      # H after dropout (SPEC §2 as written)
      fg_in = h_BxTxD
    elif self.fg_input == 'embedding':  # H before dropout: a is not trained on 30 % of H
      fg_in = h_clean
    elif self.fg_input == 'features':   # BaS-Net's filtering module, on the raw input X
      # (before input_norm; width fg_hidden, a module field only)
      x = jnp.where(mask_BxT[..., None] > 0, x_BxTxF, 0.0)
      fg_in = nn.leaky_relu(_Dense(self.fg_hidden, dtype=self.dtype, name='fg_filter')(x), 0.2)
      fg_in = fg_in * mask_BxT[..., None]
    else:
      raise ValueError(f'config.model.fg_input={self.fg_input!r}: not one of {FG_INPUTS}')
    if self.fg_norm == 'center':
      fg_in = memory.center(fg_in, mask_BxT)
    elif self.fg_norm == 'batch':
      fg_in = self._batch_centred(fg_in, mask_BxT, train)
    elif self.fg_norm == 'layernorm':
      fg_in = nn.LayerNorm(use_bias=False, use_scale=False)(fg_in) * mask_BxT[..., None]
    elif self.fg_norm != 'none':
      raise ValueError(f'config.model.fg_norm={self.fg_norm!r}: not one of {FG_NORMS}')
    # A k=1 conv is a Dense over the feature axis.
    fg_logit = _Dense(1, bias_init=nn.initializers.constant(self.fg_bias_init),
                      dtype=self.dtype, name='fg_attention')(fg_in)[..., 0]
    fg_BxT = nn.sigmoid(fg_logit) * mask_BxT
    return h_BxTxD, fg_BxT

  def _batch_centred(self, fg_in_BxTxD, mask_BxT, train):
    """fg_norm='batch': a's layer input minus its mean over every valid snippet of the batch
    (training; the global batch under jit, each seed's own under vmap) or the running mean of
    those batch means (eval), kept in the `memory` collection as `fg_mean`.

    Centred over the batch, sum_t (H_t - mean) = 0, so a push alike on every snippet of the
    batch (the shortcut of docs/method.md §9) gives the attention's weights no gradient: only
    its bias can move the batch's mean logit. Unlike fg_norm='center', a video whose snippets
    all look like action still scores above one that looks like background.
    """
    m = mask_BxT[..., None]
    running = self.variable('memory', 'fg_mean', jnp.zeros, (fg_in_BxTxD.shape[-1],),
                            jnp.float32)
    if not train:
      return (fg_in_BxTxD - running.value) * m
    mean_D = (jnp.sum(fg_in_BxTxD * m, axis=(0, 1))
              / jnp.maximum(jnp.sum(mask_BxT), 1.0))
    if not self.is_initializing():
      running.value = (FG_MEAN_MOMENTUM * running.value
                       + (1.0 - FG_MEAN_MOMENTUM) * jax.lax.stop_gradient(mean_D))
    return (fg_in_BxTxD - mean_D) * m


def suppress(s_BxTxC, fg_BxT, mask_BxT, form):
  """The suppressed branch's logits before the bias: a scales each snippet's logits s.

  'features': a_t s_t, i.e. the classifier applied to a_t H_t (SPEC §2.3). A logit raised on
  every snippet alike (early in training the background column is) is scaled by a too, so
  shrinking a everywhere lowers it: a shortcut that can kill a (docs/method.md §9).
  'logits': a_t (s_t - min s) + min s, the min per class over the video's valid snippets: a
  scales only how far a snippet's logit stands above the video's lowest, so a column raised
  alike on every snippet passes through unscaled and a has nothing to gain from shrinking
  everywhere.
  """
  a = fg_BxT[..., None]
  if form == 'features':
    return a * s_BxTxC
  if form == 'logits':
    valid = mask_BxT[..., None] > 0
    low_Bx1xC = jnp.min(jnp.where(valid, s_BxTxC, jnp.inf), axis=1, keepdims=True)
    low_Bx1xC = jnp.where(jnp.isfinite(low_Bx1xC), low_Bx1xC, 0.0)  # a video with no snippet
    return a * (s_BxTxC - low_Bx1xC) + low_Bx1xC
  raise ValueError(f'config.model.suppress={form!r}: not one of {SUPPRESS_FORMS}')


@struct.dataclass
class MemoryOutputs:
  """What the AUMN head adds: the memory's attentions and units (losses.py reads them)."""
  update_attn: jax.Array      # [B, T, L] R: which unit each snippet writes to
  update_cos: jax.Array       # [B, T, L] cos(H Wk, M~ Wq) against the adapted units (L_hom)
  read_attn: jax.Array        # [B, T, L] A: which unit classifies each snippet
  memory_adapted: jax.Array   # [B, L, D] M~: the bank adapted to each video
  mass: jax.Array             # [B, L] foreground mass each unit claimed


@struct.dataclass
class Outputs:
  """A head's outputs. Per snippet [B, T, ...]: cas, cas_supp (logits, C + 1 columns, the
  last one background), fg (the foreground attention a); per video [B, C + 1]: video_logits,
  video_logits_supp (top-k MIL scores of the two branches). `memory` is None for head='mil':
  `out.memory is not None` is how losses and steps tell the heads apart."""
  cas: jax.Array
  cas_supp: jax.Array
  fg: jax.Array
  video_logits: jax.Array
  video_logits_supp: jax.Array
  memory: Optional[MemoryOutputs] = None


def _outputs(cas, cas_supp, fg, mask, ratio, memory_outputs=None):
  return Outputs(cas=cas, cas_supp=cas_supp, fg=fg,
                 video_logits=topk_mean(cas, mask, ratio),
                 video_logits_supp=topk_mean(cas_supp, mask, ratio),
                 memory=memory_outputs)


class MILNet(nn.Module):
  """BaS-Net baseline: one linear classifier S(Z)_t = Z_t W + b on both branches."""
  num_classes: int          # C (background column added here)
  dim: int
  dropout: float
  topk_ratio: int
  fg_bias_init: float
  fg_norm: str
  fg_input: str
  input_norm: str
  classifier_bias: bool
  suppress: str             # models.SUPPRESS_FORMS
  dtype: Any               # config.compute_dtype (models.COMPUTE_DTYPES)

  @nn.compact
  def __call__(self, x_BxTxF, mask_BxT, train=False):
    mask_BxT = mask_BxT.astype(jnp.float32)
    h, fg = _Skeleton(self.dim, self.dropout, self.fg_bias_init, self.fg_norm,
                      self.fg_input, self.input_norm, self.dtype, name='skeleton')(
        x_BxTxF, mask_BxT, train)
    hw = _Dense(self.num_classes + 1, use_bias=False, dtype=self.dtype, name='classifier')(h)
    bias_C = 0.0
    if self.classifier_bias:
      bias_C = self.param('classifier_bias', nn.initializers.zeros, (self.num_classes + 1,))
    # S(a*H) = a * (H W) + b: one matmul serves both branches.
    m = mask_BxT[..., None]
    cas = (hw + bias_C) * m
    cas_supp = (suppress(hw, fg, mask_BxT, self.suppress) + bias_C) * m
    return _outputs(cas, cas_supp, fg, mask_BxT, self.topk_ratio)


class AUMN(nn.Module):
  """Action Unit Memory Network: the skeleton with the action-unit memory as classifier."""
  num_classes: int          # C (background column added here)
  dim: int                  # D
  num_units: int            # L
  dropout: float
  tau: float                # read-attention temperature
  tau_u: float              # update-attention temperature
  topk_ratio: int           # r
  momentum: float           # eta of the stored-bank update
  center_features: bool
  fg_bias_init: float
  fg_norm: str
  fg_input: str
  input_norm: str
  classifier_bias: bool
  unit_init: str            # 'lecun': each W_l like its own Dense layer | 'zeros'
  shared_classifier: bool   # S_t = Z_t W_0 + b_0 + sum_l A_tl (Z_t W_l + b_l)
  suppress: str             # models.SUPPRESS_FORMS
  dtype: Any               # config.compute_dtype (models.COMPUTE_DTYPES)
  unit_context: bool        # each unit classifier also reads the video's memory summary c_b

  @nn.compact
  def __call__(self, x_BxTxF, mask_BxT, train=False):
    mask_BxT = mask_BxT.astype(jnp.float32)
    L, D, C1 = self.num_units, self.dim, self.num_classes + 1
    h, fg = _Skeleton(self.dim, self.dropout, self.fg_bias_init, self.fg_norm,
                      self.fg_input, self.input_norm, self.dtype, name='skeleton')(
        x_BxTxF, mask_BxT, train)
    bank = self.variable('memory', 'bank',
                         lambda: memory.init_bank(self.make_rng('params'), L, D))
    bank_LxD = bank.value

    # The attentions compare directions; with center_features they see each snippet relative
    # to its video (SPEC §9). The classifiers always see the uncentred H.
    h_att = memory.center(h, mask_BxT) if self.center_features else h
    # No biases: a bias is a direction shared by every snippet, exactly what cosines must not see.
    proj = lambda name: _Dense(D, use_bias=False, dtype=self.dtype, name=name)
    wk, wq, qr, kr = proj('update_key'), proj('update_query'), proj('read_query'), proj('read_key')

    # Attention 1: units read the video; the stored bank is a constant of this step.
    keys_BxTxD = wk(h_att)
    update_BxTxL, _ = memory.update_attention(keys_BxTxD, wq(bank_LxD), mask_BxT, self.tau_u)
    units_BxLxD, mass_BxL = memory.write_units(h_att, update_BxTxL, fg, mask_BxT)
    gate_in = jnp.concatenate(
        [jnp.broadcast_to(bank_LxD, units_BxLxD.shape), units_BxLxD], axis=-1)
    gate_BxL = nn.sigmoid(_Dense(1, dtype=self.dtype, name='gate')(gate_in)[..., 0])
    adapted_BxLxD = memory.adapt_memory(bank_LxD, units_BxLxD, gate_BxL)
    # L_hom compares claimed snippets with the ADAPTED units, in the update-attention space.
    update_cos = memory.cosine(keys_BxTxD, wq(adapted_BxLxD)) * mask_BxT[..., None]

    if train and not self.is_initializing():
      bank.value = memory.update_bank(bank_LxD, adapted_BxLxD, mass_BxL, self.momentum)

    # Attention 2 and the unit-specific classifiers.
    read_BxTxL = memory.read_attention(qr(h_att), kr(adapted_BxLxD), mask_BxT, self.tau)
    if self.unit_init == 'lecun':  # each W_l like its own Dense layer (fan-in D)
      kernel_init = nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
    elif self.unit_init == 'zeros':  # every unit starts as the same (zero) classifier
      kernel_init = nn.initializers.zeros
    else:
      raise ValueError(f'config.model.unit_init={self.unit_init!r}: not one of {UNIT_INITS}')
    kernel = self.param('unit_kernel', kernel_init, (L, D, C1))
    bias = (self.param('unit_bias', nn.initializers.zeros, (L, C1)) if self.classifier_bias
            else jnp.zeros((L, C1), jnp.float32))
    # In compute_dtype: the [B, T, L, C+1] unit logits (the largest product); their mix over
    # units is float32 (the einsum with the float32 A promotes).
    weighted, bias_part = memory.unit_classify(read_BxTxL, h.astype(self.dtype),
                                               kernel.astype(self.dtype), bias)
    if self.unit_context:  # + sum_l A_tl (c_b V_l): a unit's classes told apart by its video
      weighted = weighted + memory.unit_context_logits(
          read_BxTxL, adapted_BxLxD, mass_BxL,
          self.param('unit_context_kernel', nn.initializers.zeros, (L, D, C1)))
    if self.shared_classifier:  # BaS-Net's classifier beside the units: S = mil + memory
      weighted = weighted + _Dense(C1, use_bias=False, dtype=self.dtype, name='classifier')(h)
      if self.classifier_bias:
        bias_part = bias_part + self.param('classifier_bias', nn.initializers.zeros, (C1,))
    m = mask_BxT[..., None]
    cas = (weighted + bias_part) * m
    cas_supp = (suppress(weighted, fg, mask_BxT, self.suppress) + bias_part) * m

    return _outputs(cas, cas_supp, fg, mask_BxT, self.topk_ratio, MemoryOutputs(
        update_attn=update_BxTxL, update_cos=update_cos, read_attn=read_BxTxL,
        memory_adapted=adapted_BxLxD, mass=mass_BxL))


def create_model(config: Any, num_classes: int) -> nn.Module:
  """Builds the network config.model.head names from config.model / config.memory."""
  mc = config.model
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f'config.compute_dtype={config.compute_dtype!r}: not one of {COMPUTE_DTYPES}')
  dtype = jnp.dtype(config.compute_dtype)
  if mc.head == 'mil':
    return MILNet(num_classes=num_classes, dim=mc.dim, dropout=mc.dropout,
                  topk_ratio=mc.topk_ratio, fg_bias_init=mc.fg_bias_init,
                  fg_norm=mc.fg_norm, fg_input=mc.fg_input,
                  input_norm=mc.input_norm, classifier_bias=mc.classifier_bias,
                  suppress=mc.suppress, dtype=dtype)
  if mc.head == 'aumn':
    return AUMN(num_classes=num_classes, dim=mc.dim, num_units=mc.num_units,
                dropout=mc.dropout, tau=mc.tau, tau_u=mc.tau_u, topk_ratio=mc.topk_ratio,
                momentum=config.memory.momentum, center_features=mc.center_features,
                fg_bias_init=mc.fg_bias_init, fg_norm=mc.fg_norm,
                fg_input=mc.fg_input, input_norm=mc.input_norm,
                classifier_bias=mc.classifier_bias, unit_init=mc.unit_init,
                shared_classifier=mc.shared_classifier, suppress=mc.suppress, dtype=dtype,
                unit_context=mc.unit_context)
  raise ValueError(f"config.model.head: unknown head {mc.head!r} (expected 'aumn' or 'mil')")
