"""The PyTorch baseline: AUMN and its BaS-Net head written the way a PyTorch WTAL codebase would.

No official AUMN code exists, so the baseline the JAX code is benchmarked against is this file:
the model, losses and memory-bank update of SPEC.md §2-§3 (docs/method.md) as idiomatic eager
PyTorch — `nn.Module`s, parameters and a `bank` buffer in one `state_dict`, `model.train()` /
`model.eval()`, the bank moved in-place under `torch.no_grad()` during a training forward (like
BatchNorm's running stats), `torch.optim.Adam(weight_decay=...)` (classic L2, which is what
optax's `add_decayed_weights` + `adam` chain computes). `torch.compile` is optional
(`compile_train_step`).

A tweak is one function, on both sides: every public function of aumn_jax/memory.py and
aumn_jax/losses.py has a mirror here under the same name, with the same parameters in the same
order and the same meaning (torch tensors for jnp arrays), and `AUMN.forward` / `total_loss` /
`diagnostics` call them where models.py / losses.py call theirs. tests/torch_parity_test.py
checks each pair on random inputs by name, so a formula changed on one side only fails a test
naming the function (docs/tweaks.md).

The twin covers the default formulation and the options listed in IMPLEMENTED; any other config
key or value is refused in one line where the config enters (`create_model`, `from_flax`,
`total_loss`, `make_optimizer`), never computed differently in silence.

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
GUIDE_CLASSES = ('all', 'video')   # losses.GUIDE_CLASSES
GUIDE_FORMS = ('l1', 'bce')        # losses.GUIDE_FORMS
FG_MEAN_MOMENTUM = 0.9             # models.FG_MEAN_MOMENTUM (fg_norm='batch')

# What the twin computes of the config: key -> the values it implements (None: every value, a
# size, a weight or a flag it follows). Every key of the groups model, memory, loss and optim
# must be listed, so an option added to configs/thumos.py is refused here until it is mirrored;
# a top-level key listed is checked where a config has it. Not implemented, among the options
# aumn_jax.models has: model.input_norm='center', model.fg_input='features', and a
# compute_dtype other than float32.
IMPLEMENTED = {
    'compute_dtype': ('float32',),
    'model.head': ('aumn', 'mil'),
    'model.dim': None, 'model.num_units': None, 'model.dropout': None, 'model.tau': None,
    'model.tau_u': None, 'model.topk_ratio': None, 'model.center_features': None,
    'model.fg_bias_init': None,
    'model.input_norm': ('none', 'layernorm'),
    'model.fg_input': ('dropped', 'embedding'),
    'model.fg_norm': ('none', 'center', 'layernorm', 'batch'),
    'model.classifier_bias': None,
    'model.unit_init': ('lecun', 'zeros'),
    'model.shared_classifier': None, 'model.unit_context': None,
    'model.suppress': ('features', 'logits'),
    'memory.momentum': None,
    'loss.lambda_div': None, 'loss.lambda_hom': None, 'loss.lambda_sp': None,
    'loss.lambda_read': None, 'loss.lambda_guide': None,
    'loss.guide_form': GUIDE_FORMS, 'loss.guide_classes': GUIDE_CLASSES,
    'loss.guide_center': None, 'loss.guide_center_steps': None, 'loss.guide_steps': None,
    'optim.learning_rate': None, 'optim.weight_decay': None, 'optim.cosine_steps': (0,),
}


def check_option(key: str, value: Any) -> None:
  """One-line ValueError unless IMPLEMENTED lists `key` ('model.fg_input') and `value`."""
  known = IMPLEMENTED.get(key, ())
  if key not in IMPLEMENTED or (known is not None and value not in known):
    raise ValueError(f'config.{key}={value!r}: not implemented by the PyTorch twin '
                     '(benchmarks/torch_aumn.py)')


def check_group(group: str, group_cfg: Any) -> None:
  """check_option on every key of one config group (group='loss', group_cfg=config.loss)."""
  for key, value in _items(group_cfg):
    check_option(f'{group}.{key}', value)


def check_model_config(config: Any) -> None:
  """What create_model reads: config.model, config.memory and the top-level keys IMPLEMENTED
  lists (where config has them)."""
  top = dict(_items(config))
  for key in IMPLEMENTED:
    if '.' not in key and key in top:
      check_option(key, top[key])
  check_group('model', config.model)
  check_group('memory', config.memory)


def _items(cfg: Any):
  # A ConfigDict or dict, or a namespace (tests build loss configs as SimpleNamespace).
  return cfg.items() if hasattr(cfg, 'items') else vars(cfg).items()


# ---------------------------------------------------------------------------------------------
# Memory: aumn_jax/memory.py, function by function.

def safe_normalize(x, axis=-1, eps=NORM_EPS):
  """x / sqrt(|x|^2 + eps^2): exactly 0 for x = 0, finite gradient everywhere."""
  return x * torch.rsqrt(x.square().sum(axis, keepdim=True) + eps * eps)


def cosine(x_BxTxD, y_xLxD):
  """Cosines [B, T, L] between snippet vectors and unit vectors ([L, D] shared or [B, L, D])."""
  return safe_normalize(x_BxTxD) @ safe_normalize(y_xLxD).transpose(-1, -2)


def init_bank(rng, num_units, dim):
  """Random unit directions [L, D]; rng: a torch.Generator (None: torch's global generator)."""
  return safe_normalize(torch.randn(num_units, dim, generator=rng))


def center(h_BxTxD, mask_BxT):
  """Subtracts each video's masked mean over valid snippets; padded snippets stay exactly 0."""
  m = mask_BxT.unsqueeze(-1)
  mean_Bx1xD = (h_BxTxD * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
  return (h_BxTxD - mean_Bx1xD) * m


def update_attention(keys_BxTxD, unit_queries_LxD, mask_BxT, tau_u):
  """Attention 1, units compete for snippets: (R = softmax_l(cos(H Wk, M Wq) / tau_u), cos)."""
  cos_BxTxL = cosine(keys_BxTxD, unit_queries_LxD)
  r_BxTxL = torch.softmax(cos_BxTxL / tau_u, -1) * mask_BxT.unsqueeze(-1)
  return r_BxTxL, cos_BxTxL


def write_units(values_BxTxD, r_BxTxL, fg_BxT, mask_BxT):
  """(U, n): n_l = sum_t m a R_tl; U_l = normalize(sum_t m a R_tl H_t / (n_l + eps))."""
  w_BxTxL = r_BxTxL * (fg_BxT * mask_BxT).unsqueeze(-1)
  mass_BxL = w_BxTxL.sum(1)
  sums_BxLxD = torch.einsum('btl,btd->bld', w_BxTxL, values_BxTxD)
  units_BxLxD = safe_normalize(sums_BxLxD / (mass_BxL.unsqueeze(-1) + MASS_EPS))
  return units_BxLxD, mass_BxL


def adapt_memory(bank_LxD, units_BxLxD, gate_BxL):
  """Video-adapted memory M~_l = normalize(M_l + g_l (U_l - M_l)), [B, L, D] on the sphere."""
  g = gate_BxL.unsqueeze(-1)
  return safe_normalize(bank_LxD[None] + g * (units_BxLxD - bank_LxD[None]))


def update_bank(bank_LxD, adapted_BxLxD, mass_BxL, momentum):
  """M_l <- normalize(M_l + eta sum_b n_bl (M~_bl - M_l) / (sum_b n_bl + eps)); no gradient."""
  adapted_BxLxD, mass_BxL = adapted_BxLxD.detach(), mass_BxL.detach()
  bank_LxD = bank_LxD.detach()
  total_Lx1 = mass_BxL.sum(0).unsqueeze(-1)
  pull_LxD = (torch.einsum('bl,bld->ld', mass_BxL, adapted_BxLxD)
              - total_Lx1 * bank_LxD) / (total_Lx1 + MASS_EPS)
  moved_LxD = safe_normalize(bank_LxD + momentum * pull_LxD)
  return torch.where(total_Lx1 > 0, moved_LxD, bank_LxD)


def read_attention(queries_BxTxD, unit_keys_BxLxD, mask_BxT, tau):
  """Attention 2, snippets read the units: A = softmax_l(cos(H Qr, M~ Kr) / tau), 0 at padding."""
  cos_BxTxL = cosine(queries_BxTxD, unit_keys_BxLxD)
  return torch.softmax(cos_BxTxL / tau, -1) * mask_BxT.unsqueeze(-1)


def unit_classify(attn_BxTxL, z_BxTxD, kernel_LxDxC, bias_LxC):
  """S_t = sum_l A_tl (Z_t W_l + b_l) as (weighted, bias) parts: Z times all L classifiers in
  one [D, L*C1] matmul, then the A-weighted sum over units (memory.unit_classify's cost note)."""
  num_units, dim, num_classes = kernel_LxDxC.shape
  w_DxLC = kernel_LxDxC.permute(1, 0, 2).reshape(dim, num_units * num_classes)
  logits_BxTxLxC = (z_BxTxD @ w_DxLC).unflatten(-1, (num_units, num_classes))
  weighted_BxTxC = torch.einsum('btl,btlc->btc', attn_BxTxL, logits_BxTxLxC)
  bias_BxTxC = attn_BxTxL @ bias_LxC
  return weighted_BxTxC, bias_BxTxC


def unit_context_logits(attn_BxTxL, adapted_BxLxD, mass_BxL, kernel_LxDxC):
  """sum_l A_tl (c_b V_l), c_b = sqrt(D) normalize(sum_l n_bl M~_bl): unit classifiers of the
  video's memory summary (memory.unit_context_logits)."""
  dim = adapted_BxLxD.shape[-1]
  context_BxD = dim ** 0.5 * safe_normalize(torch.einsum('bl,bld->bd', mass_BxL, adapted_BxLxD))
  per_unit_BxLxC = torch.einsum('bd,ldc->blc', context_BxD, kernel_LxDxC)
  return torch.einsum('btl,blc->btc', attn_BxTxL, per_unit_BxLxC)


def mean_abs_offdiag_cos(rows_xLxD):
  """Mean |cos| between distinct rows ([L, D] or [B, L, D] averaged over B): 1 = collapsed."""
  n = safe_normalize(rows_xLxD)
  gram = (n @ n.transpose(-1, -2)).abs()
  num_units = rows_xLxD.shape[-2]
  off = gram.sum((-2, -1)) - torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
  return (off / (num_units * (num_units - 1))).mean()


# ---------------------------------------------------------------------------------------------
# Modules: aumn_jax/models.py.

def topk_mean(s_BxTxC, mask_BxT, ratio):
  """Per class, mean of the top-k of s over valid t, k = max(1, T_valid // ratio).

  k varies per video under one padded shape, so this sorts (padding last) and keeps ranks < k
  rather than calling torch.topk with one k.
  """
  valid = mask_BxT.unsqueeze(-1) > 0
  t_valid = (mask_BxT > 0).sum(1)
  k = (t_valid // ratio).clamp_min(1)
  sorted_desc = torch.sort(torch.where(valid, s_BxTxC, -math.inf), dim=1, descending=True).values
  ranks = torch.arange(s_BxTxC.shape[1], device=s_BxTxC.device)
  keep = (ranks[None] < k[:, None]) & (ranks[None] < t_valid[:, None])
  total = torch.where(keep.unsqueeze(-1), sorted_desc, 0.0).sum(1)
  return total / k[:, None].to(s_BxTxC.dtype)


def _lecun_normal_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
  # Flax's default kernel init (truncated normal, variance 1 / fan_in), so a model trained with
  # this file alone starts from the distribution the JAX model starts from.
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
  return nn.init.trunc_normal_(tensor, 0.0, std, -2 * std, 2 * std)


class Skeleton(nn.Module):
  """H = Dropout(ReLU(Conv1D_k3(norm(X)))) zeroed at padding; a = sigmoid(Linear(.)) of H (or H
  before dropout, centred or layer-normed: model.fg_input / fg_norm) zeroed at padding.

  fg_norm='batch' is BatchNorm's centring without the scale: in training a's layer input minus
  its mean over every valid snippet of the batch, that mean moving the `fg_mean` buffer in
  place (momentum FG_MEAN_MOMENTUM); in eval minus the buffer (models._Skeleton._batch_centred).

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
    check_option('model.input_norm', input_norm)
    check_option('model.fg_input', fg_input)
    check_option('model.fg_norm', fg_norm)
    self.conv_impl = conv_impl
    self.input_norm, self.fg_input, self.fg_norm = input_norm, fg_input, fg_norm
    self.conv = nn.Conv1d(feature_dim, dim, kernel_size=3, padding=1)
    self.dropout = nn.Dropout(dropout)
    self.fg_attention = nn.Linear(dim, 1)   # a k=1 Conv1d, on [B, T, D]
    _lecun_normal_(self.conv.weight, 3 * feature_dim)
    nn.init.zeros_(self.conv.bias)
    _lecun_normal_(self.fg_attention.weight, dim)
    nn.init.constant_(self.fg_attention.bias, fg_bias_init)
    if fg_norm == 'batch':
      self.register_buffer('fg_mean', torch.zeros(dim))

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
    elif self.fg_norm == 'batch':
      fg_in = (fg_in - self._batch_mean(fg_in, mask)) * m
    elif self.fg_norm == 'layernorm':
      fg_in = F.layer_norm(fg_in, fg_in.shape[-1:], eps=1e-6) * m
    fg = torch.sigmoid(self.fg_attention(fg_in).squeeze(-1)) * mask
    return h, fg

  def _batch_mean(self, fg_in, mask):
    if not self.training:
      return self.fg_mean
    mean = (fg_in * mask.unsqueeze(-1)).sum((0, 1)) / mask.sum().clamp_min(1.0)
    with torch.no_grad():
      self.fg_mean.mul_(FG_MEAN_MOMENTUM).add_((1.0 - FG_MEAN_MOMENTUM) * mean)
    return mean


def suppress(s, fg, mask, form):
  """models.suppress: what the foreground attention scales in the suppressed branch."""
  a = fg.unsqueeze(-1)
  if form == 'features':
    return a * s
  if form == 'logits':
    valid = mask.unsqueeze(-1) > 0
    low = torch.where(valid, s, torch.full_like(s, float('inf'))).amin(1, keepdim=True)
    low = torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    return a * (s - low) + low
  raise ValueError(f'config.model.suppress={form!r}: not one of {IMPLEMENTED["model.suppress"]}')


def _outputs(cas, cas_supp, fg, mask, ratio):
  return {'cas': cas, 'cas_supp': cas_supp, 'fg': fg,
          'video_logits': topk_mean(cas, mask, ratio),
          'video_logits_supp': topk_mean(cas_supp, mask, ratio)}


class MILNet(nn.Module):
  """BaS-Net baseline (model.head = 'mil'): one linear classifier on both branches."""

  def __init__(self, num_classes: int, feature_dim: int, dim: int, dropout: float,
               topk_ratio: int, fg_bias_init: float = 0.0, classifier_bias: bool = True,
               conv_impl: str = 'conv', suppress_form: str = 'features', **skeleton_options):
    super().__init__()
    self.topk_ratio, self.suppress_form = topk_ratio, suppress_form
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
    cas_supp = (suppress(hw, fg, mask, self.suppress_form) + bias) * m
    return _outputs(cas, cas_supp, fg, mask, self.topk_ratio)


class AUMN(nn.Module):
  """Action Unit Memory Network: the skeleton with the action-unit memory as classifier."""

  def __init__(self, num_classes: int, feature_dim: int, dim: int, num_units: int,
               dropout: float, tau: float, tau_u: float, topk_ratio: int, momentum: float,
               center_features: bool = False, fg_bias_init: float = 0.0,
               classifier_bias: bool = True, conv_impl: str = 'conv', unit_init: str = 'lecun',
               shared_classifier: bool = False, suppress_form: str = 'features',
               unit_context: bool = False, **skeleton_options):
    super().__init__()
    check_option('model.unit_init', unit_init)
    self.tau, self.tau_u, self.topk_ratio = tau, tau_u, topk_ratio
    self.suppress_form = suppress_form
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
    self.register_buffer('bank', init_bank(None, num_units, dim))
    for lin in (self.update_key, self.update_query, self.read_query, self.read_key, self.gate):
      _lecun_normal_(lin.weight, lin.in_features)
    nn.init.zeros_(self.gate.bias)
    if unit_init == 'lecun':
      _lecun_normal_(self.unit_kernel, dim)
    else:
      nn.init.zeros_(self.unit_kernel)
    # unit_context: V_l [L, D, C1], zero-initialised (models.AUMN).
    self.unit_context_kernel = (nn.Parameter(torch.zeros(num_units, dim, c1)) if unit_context
                                else None)
    # shared_classifier: BaS-Net's classifier beside the units (S = Z W_0 + b_0 + units).
    self.classifier = self.classifier_bias = None
    if shared_classifier:
      self.classifier = nn.Linear(dim, c1, bias=False)
      _lecun_normal_(self.classifier.weight, dim)
      if classifier_bias:
        self.classifier_bias = nn.Parameter(torch.zeros(c1))

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """models.AUMN.__call__, line for line: the memory steps are the mirrors above."""
    mask = mask.float()
    num_units, _, c1 = self.unit_kernel.shape
    h, fg = self.skeleton(x, mask)
    # A copy: the in-place bank update below must not touch what autograd saved (MoCo's queue).
    bank = self.bank.clone()

    # The attentions compare directions; with center_features they see each snippet relative
    # to its video (SPEC §9). The classifiers always see the uncentred H.
    h_att = center(h, mask) if self.center_features else h

    # Attention 1: units read the video; the stored bank is a constant of this step.
    keys = self.update_key(h_att)
    update_attn, _ = update_attention(keys, self.update_query(bank), mask, self.tau_u)
    units, mass = write_units(h_att, update_attn, fg, mask)
    gate = torch.sigmoid(self.gate(torch.cat([bank.expand_as(units), units], -1))).squeeze(-1)
    adapted = adapt_memory(bank, units, gate)
    # L_hom compares claimed snippets with the ADAPTED units, in the update-attention space.
    update_cos = cosine(keys, self.update_query(adapted)) * mask.unsqueeze(-1)

    if self.training:
      with torch.no_grad():
        self.bank.copy_(update_bank(bank, adapted, mass, self.momentum))

    # Attention 2 and the unit-specific classifiers.
    read_attn = read_attention(self.read_query(h_att), self.read_key(adapted), mask, self.tau)
    bias = self.unit_bias if self.unit_bias is not None else h.new_zeros(num_units, c1)
    weighted, bias_part = unit_classify(read_attn, h, self.unit_kernel, bias)
    if self.unit_context_kernel is not None:  # + sum_l A_tl (c_b V_l)
      weighted = weighted + unit_context_logits(read_attn, adapted, mass,
                                                self.unit_context_kernel)
    if self.classifier is not None:   # BaS-Net's classifier beside the units: S = mil + memory
      weighted = weighted + self.classifier(h)
      if self.classifier_bias is not None:
        bias_part = bias_part + self.classifier_bias
    m = mask.unsqueeze(-1)
    cas = (weighted + bias_part) * m
    cas_supp = (suppress(weighted, fg, mask, self.suppress_form) + bias_part) * m

    out = _outputs(cas, cas_supp, fg, mask, self.topk_ratio)
    out.update({'update_attn': update_attn, 'update_cos': update_cos, 'read_attn': read_attn,
                'memory_adapted': adapted, 'mass': mass})
    return out


def create_model(config: Any, num_classes: int, conv_impl: str = 'conv') -> nn.Module:
  """The PyTorch twin of aumn_jax.models.create_model (reads config.model, .memory, .data).

  Raises:
    ValueError: one line naming a config key or value the twin does not implement (IMPLEMENTED).
  """
  check_model_config(config)
  mc = config.model
  common = dict(num_classes=num_classes, feature_dim=config.data.feature_dim, dim=mc.dim,
                dropout=mc.dropout, topk_ratio=mc.topk_ratio, fg_bias_init=mc.fg_bias_init,
                classifier_bias=mc.classifier_bias, conv_impl=conv_impl,
                input_norm=mc.input_norm, fg_input=mc.fg_input, fg_norm=mc.fg_norm,
                suppress_form=mc.suppress)
  if mc.head == 'mil':
    return MILNet(**common)
  if mc.head == 'aumn':
    return AUMN(num_units=mc.num_units, tau=mc.tau, tau_u=mc.tau_u,
                momentum=config.memory.momentum, center_features=mc.center_features,
                unit_init=mc.unit_init, shared_classifier=mc.shared_classifier,
                unit_context=mc.unit_context, **common)
  raise ValueError(f"config.model.head: unknown head {mc.head!r} (expected 'aumn' or 'mil')")


# ---------------------------------------------------------------------------------------------
# Losses: aumn_jax/losses.py, function by function.

def _entropy(p, axis=-1):
  return -(p * torch.log(p.clamp_min(1e-30))).sum(axis)


def _masked_mean(x_BxT, mask_BxT):
  return (x_BxT * mask_BxT).sum() / mask_BxT.sum().clamp_min(1.0)


def classification_loss(out, labels_BxC):
  """CE(p, [y, 1]) + CE(p', [y, 0]), targets normalised to sum 1, mean over videos."""
  ones = torch.ones_like(labels_BxC[:, :1])
  t_base = torch.cat([labels_BxC, ones], -1)
  t_supp = torch.cat([labels_BxC, 0.0 * ones], -1)
  t_base = t_base / t_base.sum(-1, keepdim=True)
  t_supp = t_supp / t_supp.sum(-1, keepdim=True).clamp_min(LOSS_EPS)
  ce = lambda t, logits: -(t * F.log_softmax(logits, -1)).sum(-1)
  return (ce(t_base, out['video_logits']) + ce(t_supp, out['video_logits_supp'])).mean()


def diversity_loss(adapted_BxLxD):
  """||M^ M^T - I||_F^2 / L^2 on the row-normalised adapted memory, mean over videos."""
  n = safe_normalize(adapted_BxLxD)
  gram = n @ n.transpose(-1, -2)
  num_units = adapted_BxLxD.shape[-2]
  eye = torch.eye(num_units, device=adapted_BxLxD.device, dtype=adapted_BxLxD.dtype)
  return ((gram - eye).square().sum((-2, -1)) / num_units ** 2).mean()


def homogeneity_loss(update_attn_BxTxL, update_cos_BxTxL, fg_BxT, mask_BxT):
  """sum_t m a sum_l R (1 - cos(H Wk, M~ Wq)) / sum_t m a, per video, mean over videos."""
  w_BxT = fg_BxT * mask_BxT
  spread_BxT = (update_attn_BxTxL * (1.0 - update_cos_BxTxL)).sum(-1)
  return ((w_BxT * spread_BxT).sum(1) / (w_BxT.sum(1) + LOSS_EPS)).mean()


def read_sparsity(read_attn_BxTxL, mask_BxT):
  """mean_t H(A_t) - H(mean_{b,t} A_bt) over valid snippets (few units each, many in all)."""
  conditional = _masked_mean(_entropy(read_attn_BxTxL), mask_BxT)
  marginal_L = ((read_attn_BxTxL * mask_BxT.unsqueeze(-1)).sum((0, 1))
                / mask_BxT.sum().clamp_min(1.0))
  return conditional - _entropy(marginal_L)


def foreground_sparsity(fg_BxT, mask_BxT):
  """mean_t a_t over valid snippets: actions are a small part of a video (BaS-Net's L1)."""
  return _masked_mean(fg_BxT, mask_BxT)


def guide_loss(out, mask_BxT, labels_BxC=None, form='l1', center=False):
  """mean_t |1 - a_t - p_bg(t)| over valid snippets (base branch's background probability);
  with labels, p_bg is the softmax over the background and the video's classes only;
  form='bce': BCE of a against the detached 1 - p_bg; center: each CAS column minus its mean
  over the video's valid snippets first."""
  logits_BxTxC1 = out['cas']
  if center:
    m_BxTx1 = mask_BxT.float()[..., None]
    mean_Bx1xC1 = ((logits_BxTxC1 * m_BxTx1).sum(1, keepdim=True)
                   / m_BxTx1.sum(1, keepdim=True).clamp(min=1.0))
    logits_BxTxC1 = logits_BxTxC1 - mean_Bx1xC1
  if labels_BxC is not None:
    keep_BxC1 = torch.cat([labels_BxC > 0, torch.ones_like(labels_BxC[:, :1], dtype=torch.bool)],
                          -1)
    logits_BxTxC1 = logits_BxTxC1.masked_fill(~keep_BxC1[:, None, :], float('-inf'))
  p_bg_BxT = torch.softmax(logits_BxTxC1, -1)[..., -1]
  if form == 'l1':
    return _masked_mean((1.0 - out['fg'] - p_bg_BxT).abs(), mask_BxT)
  target = (1.0 - p_bg_BxT).detach()
  a = out['fg'].clamp(1e-6, 1.0 - 1e-6)
  return _masked_mean(-(target * a.log() + (1.0 - target) * torch.log1p(-a)), mask_BxT)


def guide_centred(loss_cfg: Any, step) -> bool:
  """Centred at this step: always with guide_center, else for the first guide_center_steps."""
  return bool(loss_cfg.guide_center) or step < loss_cfg.guide_center_steps


def guide_weight(loss_cfg: Any, step) -> float:
  """lambda_guide, decayed linearly to 0 over the first guide_steps steps (0: constant)."""
  if not loss_cfg.guide_steps:
    return loss_cfg.lambda_guide
  return loss_cfg.lambda_guide * min(max(1.0 - step / loss_cfg.guide_steps, 0.0), 1.0)


@torch.no_grad()
def diagnostics(out, mask_BxT) -> Dict[str, torch.Tensor]:
  """The logging-only scalars of losses.diagnostics (kept so both steps do the same work)."""
  m = mask_BxT
  fg = out['fg']
  w_act, w_bg = fg * m, (1.0 - fg) * m
  wmean = lambda x, w: (x * w).sum() / (w.sum() + LOSS_EPS)
  p_bg_BxT = torch.softmax(out['cas'], -1)[..., -1]
  diag = {'diag_fg_mean': _masked_mean(fg, m),
          'diag_bg_prob_action': wmean(p_bg_BxT, w_act),
          'diag_bg_prob_background': wmean(p_bg_BxT, w_bg)}
  if 'read_attn' not in out:
    return diag

  read, upd, mass = out['read_attn'], out['update_attn'], out['mass']
  num_units = read.shape[-1]
  log_l = math.log(num_units)

  def usage_cos(attn_BxTxL):
    u_act = torch.einsum('bt,btl->l', w_act, attn_BxTxL)
    u_bg = torch.einsum('bt,btl->l', w_bg, attn_BxTxL)
    return (safe_normalize(u_act) * safe_normalize(u_bg)).sum()

  read_entropy = _masked_mean(_entropy(read), m)
  read_marginal = (read * m.unsqueeze(-1)).sum((0, 1)) / m.sum().clamp_min(1.0)
  share_L = mass.sum(0) / (mass.sum() + LOSS_EPS)
  adapted = out['memory_adapted']
  # Same unit, different videos: 1 means M~ ignores the video (the adaptation is dead).
  unit_dirs = safe_normalize(adapted)
  mean_dir_LxD = unit_dirs.mean(0)
  batch = adapted.shape[0]
  cross_video = (((batch * mean_dir_LxD).square().sum(-1) - unit_dirs.square().sum((0, -1)))
                 / max(batch * (batch - 1), 1))
  diag.update({
      'diag_read_entropy': read_entropy,
      'diag_read_entropy_ratio': read_entropy / log_l,
      'diag_read_marginal_entropy_ratio': _entropy(read_marginal) / log_l,
      'diag_read_usage_cos': usage_cos(read),
      'diag_update_entropy_ratio': _masked_mean(_entropy(upd), m) / log_l,
      'diag_update_usage_cos': usage_cos(upd),
      'diag_units_in_use': (share_L > IN_USE_SHARE / num_units).float().mean(),
      'diag_memory_abs_cos': mean_abs_offdiag_cos(adapted),
      'diag_memory_cross_video_cos': cross_video.mean(),
  })
  return diag


def total_loss(out, batch, loss_cfg: Any, step=0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
  """L = L_cls + lambda_div L_div + lambda_hom L_hom + lambda_sp L_fg + lambda_read L_read
  + lambda_guide(step) L_guide, and the logged terms (losses.total_loss: batch needs 'labels'
  [B, C] and 'mask' [B, T]).

  Raises:
    ValueError: one line naming a loss_cfg key or value the twin does not implement (checked
      in eager mode; inside a torch.compile graph the check is left out).
  """
  if not torch.compiler.is_compiling():
    check_group('loss', loss_cfg)
  mask = batch['mask'].float()
  zero = torch.zeros((), device=mask.device)
  loss_cls = classification_loss(out, batch['labels'])
  loss_sp = foreground_sparsity(out['fg'], mask)
  loss_div = loss_hom = loss_read = zero
  if 'read_attn' in out:
    loss_div = diversity_loss(out['memory_adapted'])
    loss_hom = homogeneity_loss(out['update_attn'], out['update_cos'], out['fg'], mask)
    loss_read = read_sparsity(out['read_attn'], mask)
  loss_guide = guide_loss(out, mask,
                          batch['labels'] if loss_cfg.guide_classes == 'video' else None,
                          loss_cfg.guide_form, guide_centred(loss_cfg, step))
  loss = (loss_cls + loss_cfg.lambda_div * loss_div + loss_cfg.lambda_hom * loss_hom
          + loss_cfg.lambda_sp * loss_sp + loss_cfg.lambda_read * loss_read
          + guide_weight(loss_cfg, step) * loss_guide)
  aux = {'loss_cls': loss_cls.detach(), 'loss_div': loss_div.detach(),
         'loss_hom': loss_hom.detach(), 'loss_sp': loss_sp.detach(),
         'loss_read': loss_read.detach(), 'loss_guide': loss_guide.detach()}
  aux.update(diagnostics(out, mask))
  return loss, aux

# ---------------------------------------------------------------------------------------------
# Training and evaluation steps.

def make_optimizer(model: nn.Module, optim_cfg: Any) -> torch.optim.Optimizer:
  """Adam with classic L2 (decay added to the gradient): optax add_decayed_weights + adam."""
  check_group('optim', optim_cfg)
  return torch.optim.Adam(model.parameters(), lr=optim_cfg.learning_rate,
                          weight_decay=optim_cfg.weight_decay)


def forward_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], loss_cfg: Any,
                 step: int = 0):
  """(loss, metrics) of one training forward (also moves the bank when model.training)."""
  out = model(batch['features'], batch['mask'])
  loss, aux = total_loss(out, batch, loss_cfg, step)
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
                 ) -> Dict[str, Dict[str, torch.Tensor]]:
  """What train_step.eval_step returns: {'per_snippet': softmaxed suppressed CAS, fg (and the
  read attention), 'per_video': softmaxed suppressed video scores}."""
  out = model(features, mask)
  per_snippet = {'cas_probs': torch.softmax(out['cas_supp'], -1), 'fg': out['fg']}
  if 'read_attn' in out:
    per_snippet['read_attn'] = out['read_attn']
  return {'per_snippet': per_snippet,
          'per_video': {'video_probs': torch.softmax(out['video_logits_supp'], -1)}}


@torch.no_grad()
def eval_step(model: nn.Module, features: torch.Tensor, mask: torch.Tensor,
              outputs_fn=eval_outputs) -> Dict[str, Dict[str, torch.Tensor]]:
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
#   unit_kernel [L, D, C1], unit_bias, classifier_bias,
#   unit_context_kernel [L, D, C1]                   same names, same layout
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
    for name in ('unit_kernel', 'unit_bias', 'unit_context_kernel'):
      if name in p:
        sd[name] = a(p[name])
    sd['bank'] = a(variables['memory']['bank'])
  if 'skeleton' in variables.get('memory', {}):   # fg_norm='batch'
    sd['skeleton.fg_mean'] = a(variables['memory']['skeleton']['fg_mean'])
  return {k: v.contiguous() for k, v in sd.items()}


def flax_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
  """A state_dict of AUMN or MILNet -> Flax {'params': ...[, 'memory': {'bank', 'skeleton'}]}
  as NumPy ('bank' for AUMN, 'skeleton': {'fg_mean'} for fg_norm='batch')."""
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
  mem = {}
  if 'skeleton.fg_mean' in state_dict:   # fg_norm='batch'
    mem['skeleton'] = {'fg_mean': n('skeleton.fg_mean')}
  if 'unit_kernel' not in state_dict:
    return {'params': params, 'memory': mem} if mem else {'params': params}
  for name in _DENSE_AUMN:
    params[name] = {'kernel': n(f'{name}.weight').T.copy()}
    if f'{name}.bias' in state_dict:
      params[name]['bias'] = n(f'{name}.bias')
  for name in ('unit_kernel', 'unit_bias', 'unit_context_kernel'):
    if name in state_dict:
      params[name] = n(name)
  return {'params': params, 'memory': {'bank': n('bank'), **mem}}


def from_flax(config: Any, num_classes: int, variables: Mapping[str, Any],
              device: Any = 'cpu', conv_impl: str = 'conv') -> nn.Module:
  """A PyTorch model with the Flax model's weights and bank (strict: every key must match)."""
  model = create_model(config, num_classes, conv_impl)
  model.load_state_dict(state_dict_from_flax(variables), strict=True)
  return model.to(device)

