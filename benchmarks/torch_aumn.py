"""The PyTorch baseline: AUMN and its BaS-Net head written the way a PyTorch WTAL codebase would.

No official AUMN code exists, so the baseline the JAX code is benchmarked against is this file:
the model, losses and memory-bank update of SPEC.md §2-§3 (as aumn_jax/models.py, memory.py and
losses.py compute them, docs/method.md) as idiomatic eager PyTorch — `nn.Module`s, parameters
and a `bank` buffer in one `state_dict`, `model.train()` / `model.eval()`, the bank moved
in-place under `torch.no_grad()` during a training forward (like BatchNorm's running stats),
`torch.optim.Adam(weight_decay=...)` (classic L2, which is what optax's
`add_decayed_weights` + `adam` chain computes). `torch.compile` is optional (`compile_train_step`).

Also here: weight transfer both ways between Flax variables ({'params', 'memory'}) and this
`state_dict` (`state_dict_from_flax`, `flax_from_state_dict`), which is what makes
tests/torch_parity_test.py and benchmarks/step_time.py compare the same function.

Deliberately not here: anything JAX (this file imports torch and NumPy only, so the baseline
runs where JAX does not, and aumn_jax never imports torch), data loading, localization, and
checkpoint files. PyTorch is optional: `pip install -r requirements-torch.txt`.

Layout: tensors are [B, T, ...] like the JAX code (a WTAL codebase permutes to [B, F, T] for
Conv1d only, as here). Numerics follow the JAX code term for term (the same safe norm and
epsilons), so the two agree to float32 rounding.
"""
import math
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-4      # safe-norm epsilon (aumn_jax.memory.NORM_EPS)
MASS_EPS = 1e-6      # added to attention masses before dividing (memory.MASS_EPS)
LOSS_EPS = 1e-6      # losses._EPS
IN_USE_SHARE = 0.1   # losses._IN_USE_SHARE


# ---------------------------------------------------------------------------------------------
# Functional pieces (the same formulas as aumn_jax/memory.py).

def safe_normalize(x: torch.Tensor, dim: int = -1, eps: float = NORM_EPS) -> torch.Tensor:
  """x / sqrt(|x|^2 + eps^2): exactly 0 for x = 0, finite gradient everywhere."""
  return x * torch.rsqrt(x.square().sum(dim, keepdim=True) + eps * eps)


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """Cosines [B, T, L] between [B, T, D] and [L, D] (shared) or [B, L, D] vectors."""
  return safe_normalize(x) @ safe_normalize(y).transpose(-1, -2)


def center(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  """Subtracts each video's mean over valid snippets; padding stays 0."""
  m = mask.unsqueeze(-1)
  mean = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
  return (h - mean) * m


def topk_mean(s: torch.Tensor, mask: torch.Tensor, ratio: int) -> torch.Tensor:
  """Per class, mean of the top-k of s [B, T, C] over valid t, k = max(1, T_valid // ratio).

  k varies per video under one padded shape, so this sorts (padding last) and keeps ranks < k
  rather than calling torch.topk with one k.
  """
  valid = mask.unsqueeze(-1) > 0
  t_valid = (mask > 0).sum(1)
  k = (t_valid // ratio).clamp_min(1)
  sorted_desc = torch.sort(torch.where(valid, s, -math.inf), dim=1, descending=True).values
  ranks = torch.arange(s.shape[1], device=s.device)
  keep = (ranks[None] < k[:, None]) & (ranks[None] < t_valid[:, None])
  total = torch.where(keep.unsqueeze(-1), sorted_desc, 0.0).sum(1)
  return total / k[:, None].to(s.dtype)


def update_bank(bank: torch.Tensor, adapted: torch.Tensor, mass: torch.Tensor,
                momentum: float) -> torch.Tensor:
  """M_l <- normalize(M_l + eta sum_b n_bl (M~_bl - M_l) / (sum_b n_bl + eps)); no gradient."""
  total = mass.sum(0).unsqueeze(-1)
  pull = (torch.einsum('bl,bld->ld', mass, adapted) - total * bank) / (total + MASS_EPS)
  moved = safe_normalize(bank + momentum * pull)
  return torch.where(total > 0, moved, bank)


def _lecun_normal_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
  # Flax's default kernel init (truncated normal, variance 1 / fan_in), so a model trained with
  # this file alone starts from the distribution the JAX model starts from.
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


# ---------------------------------------------------------------------------------------------
# Modules.

class Skeleton(nn.Module):
  """H = Dropout(ReLU(Conv1D_k3(norm(X)))) zeroed at padding; a = sigmoid(Linear(.)) of H (or H
  before dropout, centred or layer-normed: model.fg_input / fg_norm) zeroed at padding.

  conv_impl 'conv' is the idiomatic nn.Conv1d (the baseline); 'gemm' computes the same conv as
  one matmul over the three shifted copies of X ([B, T, 3F] @ [3F, D]), which is what
  aumn_jax's Embedding does on GPU — same parameters, so benchmarks can separate the conv
  algorithm from the framework.
  """

  def __init__(self, feature_dim: int, dim: int, dropout: float, fg_bias_init: float = 0.0,
               conv_impl: str = 'conv', input_norm: str = 'none', fg_input: str = 'dropped',
               fg_norm: str = 'none'):
    super().__init__()
    if conv_impl not in ('conv', 'gemm'):
      raise ValueError(f'conv_impl={conv_impl!r}: not one of conv, gemm')
    # The twin covers the formulations in use; others are refused, never silently different.
    if input_norm not in ('none', 'layernorm'):
      raise ValueError(f'model.input_norm={input_norm!r}: the PyTorch twin implements none, '
                       'layernorm')
    if fg_input not in ('dropped', 'embedding'):
      raise ValueError(f'model.fg_input={fg_input!r}: the PyTorch twin implements dropped, '
                       'embedding')
    if fg_norm not in ('none', 'center', 'layernorm'):
      raise ValueError(f'model.fg_norm={fg_norm!r}: the PyTorch twin implements none, center, '
                       'layernorm')
    self.conv_impl = conv_impl
    self.input_norm, self.fg_input, self.fg_norm = input_norm, fg_input, fg_norm
    self.conv = nn.Conv1d(feature_dim, dim, kernel_size=3, padding=1)
    self.dropout = nn.Dropout(dropout)
    self.fg_attention = nn.Linear(dim, 1)   # a k=1 Conv1d, on [B, T, D]
    _lecun_normal_(self.conv.weight, 3 * feature_dim)
    nn.init.zeros_(self.conv.bias)
    _lecun_normal_(self.fg_attention.weight, dim)
    nn.init.constant_(self.fg_attention.bias, fg_bias_init)

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    m = mask.unsqueeze(-1)
    x = torch.where(m > 0, x, 0.0)   # garbage (even NaN) in padding never reaches the conv
    if self.input_norm == 'layernorm':  # flax nn.LayerNorm: eps 1e-6, no scale, no bias
      x = F.layer_norm(x, x.shape[-1:], eps=1e-6) * m
    if self.conv_impl == 'conv':
      h = self.conv(x.transpose(1, 2)).transpose(1, 2)
    else:   # weight[:, :, k] multiplies x[t - 1 + k]
      xp = F.pad(x, (0, 0, 1, 1))
      shifted = torch.cat([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], -1)
      w = self.conv.weight.permute(2, 1, 0).reshape(-1, self.conv.out_channels)
      h = torch.addmm(self.conv.bias, shifted.flatten(0, 1), w).unflatten(0, x.shape[:2])
    h_clean = F.relu(h) * m
    h = self.dropout(h_clean)
    fg_in = h_clean if self.fg_input == 'embedding' else h
    if self.fg_norm == 'center':
      fg_in = center(fg_in, mask)
    elif self.fg_norm == 'layernorm':
      fg_in = F.layer_norm(fg_in, fg_in.shape[-1:], eps=1e-6) * m
    fg = torch.sigmoid(self.fg_attention(fg_in).squeeze(-1)) * mask
    return h, fg


def _outputs(cas, cas_supp, fg, mask, ratio):
  return {'cas': cas, 'cas_supp': cas_supp, 'fg': fg,
          'video_logits': topk_mean(cas, mask, ratio),
          'video_logits_supp': topk_mean(cas_supp, mask, ratio)}


class MILNet(nn.Module):
  """BaS-Net baseline (model.head = 'mil'): one linear classifier on both branches."""

  def __init__(self, num_classes: int, feature_dim: int, dim: int, dropout: float,
               topk_ratio: int, fg_bias_init: float = 0.0, classifier_bias: bool = True,
               conv_impl: str = 'conv', **skeleton_options):
    super().__init__()
    self.topk_ratio = topk_ratio
    self.skeleton = Skeleton(feature_dim, dim, dropout, fg_bias_init, conv_impl,
                             **skeleton_options)
    self.classifier = nn.Linear(dim, num_classes + 1, bias=False)
    _lecun_normal_(self.classifier.weight, dim)
    # A separate bias: S(a*H) = a * (H W) + b, so both branches share one matmul.
    self.classifier_bias = (nn.Parameter(torch.zeros(num_classes + 1)) if classifier_bias
                            else None)

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    mask = mask.float()
    h, fg = self.skeleton(x, mask)
    hw = self.classifier(h)
    bias = 0.0 if self.classifier_bias is None else self.classifier_bias
    m = mask.unsqueeze(-1)
    cas = (hw + bias) * m
    cas_supp = (fg.unsqueeze(-1) * hw + bias) * m
    return _outputs(cas, cas_supp, fg, mask, self.topk_ratio)


class AUMN(nn.Module):
  """Action Unit Memory Network: the skeleton with the action-unit memory as classifier."""

  def __init__(self, num_classes: int, feature_dim: int, dim: int, num_units: int,
               dropout: float, tau: float, tau_u: float, topk_ratio: int, momentum: float,
               center_features: bool = False, fg_bias_init: float = 0.0,
               classifier_bias: bool = True, conv_impl: str = 'conv', unit_init: str = 'lecun',
               shared_classifier: bool = False, **skeleton_options):
    super().__init__()
    if unit_init not in ('lecun', 'zeros'):
      raise ValueError(f'model.unit_init={unit_init!r}: not one of lecun, zeros')
    self.tau, self.tau_u, self.topk_ratio = tau, tau_u, topk_ratio
    self.momentum, self.center_features = momentum, center_features
    c1 = num_classes + 1
    self.skeleton = Skeleton(feature_dim, dim, dropout, fg_bias_init, conv_impl,
                             **skeleton_options)
    # No biases on the projections: a bias is a direction every snippet shares.
    self.update_key = nn.Linear(dim, dim, bias=False)     # Wk
    self.update_query = nn.Linear(dim, dim, bias=False)   # Wq
    self.read_query = nn.Linear(dim, dim, bias=False)     # Qr
    self.read_key = nn.Linear(dim, dim, bias=False)       # Kr
    self.gate = nn.Linear(2 * dim, 1)
    self.unit_kernel = nn.Parameter(torch.empty(num_units, dim, c1))   # W_l, [L, D, C1]
    self.unit_bias = nn.Parameter(torch.zeros(num_units, c1)) if classifier_bias else None
    # The memory bank is state, not a parameter: a buffer, moved by the training forward.
    self.register_buffer('bank', safe_normalize(torch.randn(num_units, dim)))
    for lin in (self.update_key, self.update_query, self.read_query, self.read_key, self.gate):
      _lecun_normal_(lin.weight, lin.in_features)
    nn.init.zeros_(self.gate.bias)
    if unit_init == 'lecun':
      _lecun_normal_(self.unit_kernel, dim)
    else:
      nn.init.zeros_(self.unit_kernel)
    # shared_classifier: BaS-Net's classifier beside the units (S = Z W_0 + b_0 + units).
    self.classifier = self.classifier_bias = None
    if shared_classifier:
      self.classifier = nn.Linear(dim, c1, bias=False)
      _lecun_normal_(self.classifier.weight, dim)
      if classifier_bias:
        self.classifier_bias = nn.Parameter(torch.zeros(c1))

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    mask = mask.float()
    m = mask.unsqueeze(-1)
    num_units, dim, c1 = self.unit_kernel.shape
    h, fg = self.skeleton(x, mask)
    # A copy: the in-place bank update below must not touch what autograd saved (MoCo's queue).
    bank = self.bank.clone()
    h_att = center(h, mask) if self.center_features else h

    # Attention 1: units compete for snippets; each writes its fg-weighted claimed direction.
    keys = self.update_key(h_att)
    update_attn = torch.softmax(cosine(keys, self.update_query(bank)) / self.tau_u, -1) * m
    w = update_attn * (fg * mask).unsqueeze(-1)
    mass = w.sum(1)                                                   # [B, L]
    units = safe_normalize(torch.einsum('btl,btd->bld', w, h_att)
                           / (mass.unsqueeze(-1) + MASS_EPS))
    bank_b = bank.expand_as(units)
    gate = torch.sigmoid(self.gate(torch.cat([bank_b, units], -1))).squeeze(-1)
    adapted = safe_normalize(bank_b + gate.unsqueeze(-1) * (units - bank_b))   # M~ [B, L, D]
    update_cos = cosine(keys, self.update_query(adapted)) * m

    if self.training:
      with torch.no_grad():
        self.bank.copy_(update_bank(bank, adapted.detach(), mass.detach(), self.momentum))

    # Attention 2 and the unit-specific classifiers S_t = sum_l A_tl (H_t W_l + b_l): H times
    # all L classifiers in one [D, L*C1] matmul, then the A-weighted sum over units.
    read_attn = torch.softmax(
        cosine(self.read_query(h_att), self.read_key(adapted)) / self.tau, -1) * m
    w_flat = self.unit_kernel.permute(1, 0, 2).reshape(dim, num_units * c1)
    logits = (h @ w_flat).unflatten(-1, (num_units, c1))             # [B, T, L, C1]
    weighted = torch.einsum('btl,btlc->btc', read_attn, logits)
    bias = 0.0 if self.unit_bias is None else read_attn @ self.unit_bias
    if self.classifier is not None:
      weighted = weighted + self.classifier(h)
      if self.classifier_bias is not None:
        bias = bias + self.classifier_bias
    cas = (weighted + bias) * m
    cas_supp = (fg.unsqueeze(-1) * weighted + bias) * m

    out = _outputs(cas, cas_supp, fg, mask, self.topk_ratio)
    out.update({'update_attn': update_attn, 'update_cos': update_cos, 'read_attn': read_attn,
                'memory_adapted': adapted, 'mass': mass})
    return out


def create_model(config: Any, num_classes: int, conv_impl: str = 'conv') -> nn.Module:
  """The PyTorch twin of aumn_jax.models.create_model (reads config.model, .memory, .data)."""
  mc = config.model
  common = dict(num_classes=num_classes, feature_dim=config.data.feature_dim, dim=mc.dim,
                dropout=mc.dropout, topk_ratio=mc.topk_ratio, fg_bias_init=mc.fg_bias_init,
                classifier_bias=mc.classifier_bias, conv_impl=conv_impl,
                input_norm=mc.input_norm, fg_input=mc.fg_input, fg_norm=mc.fg_norm)
  if mc.head == 'mil':
    return MILNet(**common)
  if mc.head == 'aumn':
    return AUMN(num_units=mc.num_units, tau=mc.tau, tau_u=mc.tau_u,
                momentum=config.memory.momentum, center_features=mc.center_features,
                unit_init=mc.unit_init, shared_classifier=mc.shared_classifier, **common)
  raise ValueError(f"config.model.head: unknown head {mc.head!r} (expected 'aumn' or 'mil')")


# ---------------------------------------------------------------------------------------------
# Losses (aumn_jax/losses.py).

def _entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
  return -(p * torch.log(p.clamp_min(1e-30))).sum(dim)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  return (x * mask).sum() / mask.sum().clamp_min(1.0)


def classification_loss(out, labels):
  """CE(p, [y, 1]) + CE(p', [y, 0]), targets normalised to sum 1, mean over videos."""
  ones = torch.ones_like(labels[:, :1])
  t_base = torch.cat([labels, ones], -1)
  t_supp = torch.cat([labels, 0.0 * ones], -1)
  t_base = t_base / t_base.sum(-1, keepdim=True)
  t_supp = t_supp / t_supp.sum(-1, keepdim=True).clamp_min(LOSS_EPS)
  ce = lambda t, logits: -(t * F.log_softmax(logits, -1)).sum(-1)
  return (ce(t_base, out['video_logits']) + ce(t_supp, out['video_logits_supp'])).mean()


def diversity_loss(adapted):
  n = safe_normalize(adapted)
  gram = n @ n.transpose(-1, -2)
  num_units = adapted.shape[-2]
  eye = torch.eye(num_units, device=adapted.device, dtype=adapted.dtype)
  return ((gram - eye).square().sum((-2, -1)) / num_units ** 2).mean()


def homogeneity_loss(update_attn, update_cos, fg, mask):
  w = fg * mask
  spread = (update_attn * (1.0 - update_cos)).sum(-1)
  return ((w * spread).sum(1) / (w.sum(1) + LOSS_EPS)).mean()


def read_sparsity(read_attn, mask):
  conditional = _masked_mean(_entropy(read_attn), mask)
  marginal = (read_attn * mask.unsqueeze(-1)).sum((0, 1)) / mask.sum().clamp_min(1.0)
  return conditional - _entropy(marginal)


@torch.no_grad()
def diagnostics(out, mask) -> Dict[str, torch.Tensor]:
  """The logging-only scalars of losses.diagnostics (kept so both steps do the same work)."""
  fg = out['fg']
  w_act, w_bg = fg * mask, (1.0 - fg) * mask
  wmean = lambda x, w: (x * w).sum() / (w.sum() + LOSS_EPS)
  p_bg = torch.softmax(out['cas'], -1)[..., -1]
  diag = {'diag_fg_mean': _masked_mean(fg, mask),
          'diag_bg_prob_action': wmean(p_bg, w_act),
          'diag_bg_prob_background': wmean(p_bg, w_bg)}
  if 'read_attn' not in out:
    return diag
  read, upd, mass = out['read_attn'], out['update_attn'], out['mass']
  num_units = read.shape[-1]
  log_l = math.log(num_units)

  def usage_cos(attn):
    u_act = torch.einsum('bt,btl->l', w_act, attn)
    u_bg = torch.einsum('bt,btl->l', w_bg, attn)
    return (safe_normalize(u_act) * safe_normalize(u_bg)).sum()

  read_entropy = _masked_mean(_entropy(read), mask)
  read_marginal = (read * mask.unsqueeze(-1)).sum((0, 1)) / mask.sum().clamp_min(1.0)
  share = mass.sum(0) / (mass.sum() + LOSS_EPS)
  adapted = out['memory_adapted']
  n = safe_normalize(adapted)
  gram = (n @ n.transpose(-1, -2)).abs()
  offdiag = ((gram.sum((-2, -1)) - torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1))
             / (num_units * (num_units - 1))).mean()
  batch = adapted.shape[0]
  mean_dir = n.mean(0)
  cross_video = (((batch * mean_dir).square().sum(-1) - n.square().sum((0, -1)))
                 / max(batch * (batch - 1), 1))
  diag.update({
      'diag_read_entropy': read_entropy,
      'diag_read_entropy_ratio': read_entropy / log_l,
      'diag_read_marginal_entropy_ratio': _entropy(read_marginal) / log_l,
      'diag_read_usage_cos': usage_cos(read),
      'diag_update_entropy_ratio': _masked_mean(_entropy(upd), mask) / log_l,
      'diag_update_usage_cos': usage_cos(upd),
      'diag_units_in_use': (share > IN_USE_SHARE / num_units).float().mean(),
      'diag_memory_abs_cos': offdiag,
      'diag_memory_cross_video_cos': cross_video.mean(),
  })
  return diag


def guide_loss(out, mask, labels=None, form='l1', center=False):
  """mean_t |1 - a_t - p_bg(t)| over valid snippets (base branch's background probability);
  with labels, p_bg is the softmax over the background and the video's classes only;
  form='bce': BCE of a against the detached 1 - p_bg; center: each CAS column minus its mean
  over the video's valid snippets first."""
  logits = out['cas']
  if center:
    m = mask.float()[..., None]
    logits = logits - (logits * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)
  if labels is not None:
    keep = torch.cat([labels > 0, torch.ones_like(labels[:, :1], dtype=torch.bool)], -1)
    logits = logits.masked_fill(~keep[:, None, :], float('-inf'))
  p_bg = torch.softmax(logits, -1)[..., -1]
  if form == 'l1':
    return _masked_mean((1.0 - out['fg'] - p_bg).abs(), mask)
  target = (1.0 - p_bg).detach()
  a = out['fg'].clamp(1e-6, 1.0 - 1e-6)
  return _masked_mean(-(target * a.log() + (1.0 - target) * torch.log1p(-a)), mask)


def guide_weight(loss_cfg: Any, step: int) -> float:
  """lambda_guide, decayed linearly to 0 over the first guide_steps steps (0: constant)."""
  if not loss_cfg.guide_steps:
    return loss_cfg.lambda_guide
  return loss_cfg.lambda_guide * min(max(1.0 - step / loss_cfg.guide_steps, 0.0), 1.0)


def total_loss(out, labels, mask, loss_cfg: Any, step: int = 0
               ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
  """L = L_cls + lambda_div L_div + lambda_hom L_hom + lambda_sp L_fg + lambda_read L_read
  + lambda_guide(step) L_guide, and the logged terms."""
  mask = mask.float()
  zero = torch.zeros((), device=mask.device)
  loss_cls = classification_loss(out, labels)
  loss_sp = _masked_mean(out['fg'], mask)
  loss_div = loss_hom = loss_read = zero
  if 'read_attn' in out:
    loss_div = diversity_loss(out['memory_adapted'])
    loss_hom = homogeneity_loss(out['update_attn'], out['update_cos'], out['fg'], mask)
    loss_read = read_sparsity(out['read_attn'], mask)
  loss_guide = guide_loss(out, mask, labels if loss_cfg.guide_classes == 'video' else None,
                          loss_cfg.guide_form, loss_cfg.guide_center)
  loss = (loss_cls + loss_cfg.lambda_div * loss_div + loss_cfg.lambda_hom * loss_hom
          + loss_cfg.lambda_sp * loss_sp + loss_cfg.lambda_read * loss_read
          + guide_weight(loss_cfg, step) * loss_guide)
  aux = {'loss_cls': loss_cls.detach(), 'loss_div': loss_div.detach(),
         'loss_hom': loss_hom.detach(), 'loss_sp': loss_sp.detach(),
         'loss_read': loss_read.detach(),
         'loss_guide': loss_guide.detach()}
  aux.update(diagnostics(out, mask))
  return loss, aux


# ---------------------------------------------------------------------------------------------
# Training and evaluation steps.

def make_optimizer(model: nn.Module, optim_cfg: Any) -> torch.optim.Optimizer:
  """Adam with classic L2 (decay added to the gradient): optax add_decayed_weights + adam."""
  return torch.optim.Adam(model.parameters(), lr=optim_cfg.learning_rate,
                          weight_decay=optim_cfg.weight_decay)


def forward_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], loss_cfg: Any,
                 step: int = 0):
  """(loss, metrics) of one training forward (also moves the bank when model.training)."""
  out = model(batch['features'], batch['mask'])
  loss, aux = total_loss(out, batch['labels'], batch['mask'], loss_cfg, step)
  return loss, {'loss': loss.detach(), **aux}


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               batch: Mapping[str, torch.Tensor], loss_cfg: Any, loss_fn=forward_loss,
               step: int = 0) -> Dict[str, torch.Tensor]:
  """One update at training step `step` (the guide weight's schedule); metrics stay tensors
  on the device (no .item(): no host sync per step)."""
  model.train()
  optimizer.zero_grad(set_to_none=True)
  loss, metrics = loss_fn(model, batch, loss_cfg, step)
  loss.backward()
  grads = [p.grad for p in model.parameters() if p.grad is not None]
  metrics['grad_norm'] = torch.linalg.vector_norm(
      torch.stack([torch.linalg.vector_norm(g) for g in grads]))
  optimizer.step()
  return metrics


def eval_outputs(model: nn.Module, features: torch.Tensor, mask: torch.Tensor
                 ) -> Dict[str, torch.Tensor]:
  """What train_step.eval_step returns: softmaxed suppressed CAS and video scores, fg."""
  out = model(features, mask)
  result = {'cas_probs': torch.softmax(out['cas_supp'], -1),
            'video_probs': torch.softmax(out['video_logits_supp'], -1),
            'fg': out['fg']}
  if 'read_attn' in out:
    result['read_attn'] = out['read_attn']
  return result


@torch.no_grad()
def eval_step(model: nn.Module, features: torch.Tensor, mask: torch.Tensor,
              outputs_fn=eval_outputs) -> Dict[str, torch.Tensor]:
  """Inference: the stored bank, no update, no autograd (outputs_fn may be compiled)."""
  model.eval()
  return outputs_fn(model, features, mask)


def compile_train_step(**compile_kwargs):
  """forward_loss under torch.compile (forward + backward graphs); the optimizer stays eager.

  Use as train_step(model, opt, batch, cfg, loss_fn=compile_train_step()); likewise
  eval_step(model, x, mask, outputs_fn=compile_eval_step()). Use one compiled function per
  model instance (dynamo guards on the module).
  """
  return torch.compile(forward_loss, **compile_kwargs)


def compile_eval_step(**compile_kwargs):
  return torch.compile(eval_outputs, **compile_kwargs)


# ---------------------------------------------------------------------------------------------
# Weight transfer: Flax variables <-> this state_dict.
#
#   Flax (params / memory)                           PyTorch state_dict
#   skeleton/embedding/conv/kernel  [3, F, D]        skeleton.conv.weight   [D, F, 3]
#   skeleton/embedding/conv/bias    [D]              skeleton.conv.bias
#   skeleton/fg_attention/kernel    [D, 1]           skeleton.fg_attention.weight [1, D]
#   <dense>/kernel                  [in, out]        <dense>.weight         [out, in]
#   unit_kernel [L, D, C1], unit_bias, classifier_bias   same names, same layout
#   memory/bank [L, D]                               bank (buffer)

_DENSE_AUMN = ('update_key', 'update_query', 'read_query', 'read_key', 'gate')


def state_dict_from_flax(variables: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
  """Flax {'params': ..., 'memory': ...} (any arrays) -> a state_dict for AUMN or MILNet."""
  p = variables['params']
  a = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))
  sk = p['skeleton']
  sd = {'skeleton.conv.weight': a(sk['embedding']['conv']['kernel']).permute(2, 1, 0),
        'skeleton.conv.bias': a(sk['embedding']['conv']['bias']),
        'skeleton.fg_attention.weight': a(sk['fg_attention']['kernel']).T,
        'skeleton.fg_attention.bias': a(sk['fg_attention']['bias'])}
  if 'classifier' in p:           # head = 'mil', or AUMN's shared_classifier
    sd['classifier.weight'] = a(p['classifier']['kernel']).T
    if 'classifier_bias' in p:
      sd['classifier_bias'] = a(p['classifier_bias'])
  if 'unit_kernel' in p:          # head = 'aumn'
    for name in _DENSE_AUMN:
      sd[f'{name}.weight'] = a(p[name]['kernel']).T
      if 'bias' in p[name]:
        sd[f'{name}.bias'] = a(p[name]['bias'])
    sd['unit_kernel'] = a(p['unit_kernel'])
    if 'unit_bias' in p:
      sd['unit_bias'] = a(p['unit_bias'])
    sd['bank'] = a(variables['memory']['bank'])
  return {k: v.contiguous() for k, v in sd.items()}


def flax_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
  """A state_dict of AUMN or MILNet -> Flax {'params': ...[, 'memory': {'bank'}]} as NumPy."""
  n = lambda k: state_dict[k].detach().cpu().numpy().astype(np.float32)
  params = {'skeleton': {
      'embedding': {'conv': {'kernel': n('skeleton.conv.weight').transpose(2, 1, 0).copy(),
                             'bias': n('skeleton.conv.bias')}},
      'fg_attention': {'kernel': n('skeleton.fg_attention.weight').T.copy(),
                       'bias': n('skeleton.fg_attention.bias')}}}
  if 'classifier.weight' in state_dict:  # head = 'mil', or AUMN's shared_classifier
    params['classifier'] = {'kernel': n('classifier.weight').T.copy()}
    if 'classifier_bias' in state_dict:
      params['classifier_bias'] = n('classifier_bias')
  if 'unit_kernel' not in state_dict:
    return {'params': params}
  for name in _DENSE_AUMN:
    params[name] = {'kernel': n(f'{name}.weight').T.copy()}
    if f'{name}.bias' in state_dict:
      params[name]['bias'] = n(f'{name}.bias')
  params['unit_kernel'] = n('unit_kernel')
  if 'unit_bias' in state_dict:
    params['unit_bias'] = n('unit_bias')
  return {'params': params, 'memory': {'bank': n('bank')}}


def from_flax(config: Any, num_classes: int, variables: Mapping[str, Any],
              device: Any = 'cpu', conv_impl: str = 'conv') -> nn.Module:
  """A PyTorch model with the Flax model's weights and bank (strict: every key must match)."""
  model = create_model(config, num_classes, conv_impl)
  model.load_state_dict(state_dict_from_flax(variables), strict=True)
  return model.to(device)

