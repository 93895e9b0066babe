r"""Train-step and inference time: the JAX step vs the PyTorch baseline, same config and batch.

  python -m benchmarks.step_time [--device cpu|gpu] [--configs synthetic,thumos]
      [--thumos_batch N] [--impls jax,torch_eager,torch_compile] [--rounds 5] [--steps 2]
      [--json OUT.json] [--markdown BENCHMARKS.md [--markdown_section cpu|gpu|NAME]]
  python -m benchmarks.step_time --breakdown [...]   # where the time goes (see below)

Implementations (one process, one batch, the same initial weights):
  jax            the project's own code: train_step.init_state + train_step.jit_steps on a
                 parallel.make_mesh over all local devices of --device (what train.py runs);
  jax_bf16       (opt-in) the same with config.compute_dtype='bfloat16' (conv and matmuls in
                 bf16, parameters and losses in float32);
  jax_seedsN     (opt-in, N = 2, 4, 8, ...) the same with config.num_seeds=N: N independent
                 runs in one program (each seed its own copy of the batch); its row adds
                 seed-steps/s = N / step time, to compare with the jax row's 1 / step time;
  torch_eager    benchmarks/torch_aumn.py: eager PyTorch, torch.optim.Adam(weight_decay);
  torch_compile  the same with forward + loss (and backward, through AOTAutograd) under
                 torch.compile with static shapes (dynamic=True when the static compile fails,
                 as inductor's CPU codegen does at the thumos shape; the row says so); the
                 optimizer stays eager.
  torch_eager_1thread  (opt-in) eager with one intra-op thread: on a shared CPU, OpenMP's
                 per-op barrier waits can dominate the 2-thread eager step.
  torch_eager_gemm     (opt-in) eager with the embedding conv as one GEMM over three shifted
                 copies of X (torch_aumn conv_impl='gemm'), the formulation aumn_jax's
                 Embedding uses on GPU: separates the conv algorithm from the framework.
Parity of the three is tests/torch_parity_test.py. Dropout is on (config: 0.7) in all of them.

Method: each implementation is warmed up (--warmup steps: compilation, autotuning, allocator)
and then the implementations ALTERNATE for --rounds rounds (the order rotates every round), each
timing --steps train steps and --steps forward passes, each call synchronised (block_until_ready
/ torch.cuda.synchronize). A row reports median, min and max over all its timed calls; the
speed-up of JAX over a PyTorch row is the ratio of medians, with its spread over rounds (the
ratio of the two per-round medians, min..max). Forward = inference: train_step.eval_step /
torch_aumn.eval_step (stored bank, no update, no autograd).

Configs: `synthetic` = configs/synthetic.py (B 16 x T 256 x F 2048, D 256, L 16, C 20);
`thumos` = configs/thumos.py (16 x 750 x 2048, D 2048, L 64, C 20); --thumos_batch lowers B for
both implementations alike (CPU default 2). Features are random non-negative (ReLU-like) with
ragged masks (valid length T/4..T, the first video full), multi-hot labels.

Peak memory: on GPU the allocators' own counters in this process (JAX: device
memory_stats()['peak_bytes_in_use'], read after the config's runs, configs run small to large;
PyTorch: torch.cuda.max_memory_allocated() over one dedicated step, minus what the other PyTorch
implementation holds). On CPU neither allocator counts, so each (config, impl) runs once more in
a fresh subprocess: peak RSS of 2 steps (VmHWM, reset after warm-up) minus RSS after imports:
params + optimizer state + batch + the step's transients (approximate: malloc may keep freed
memory).

FLOPs: XLA's cost analysis of the lowered JAX step (the same function both compute), next to an
analytic count of the matmul/conv FLOPs; achieved TFLOP/s = FLOPs / median step time, and on a
known GPU against the datasheet's dense TF32 and FP32 peaks.

--breakdown (instead of the table): alternates the JAX step, the eager step (2 threads and 1),
the embedding conv alone (forward + weight gradient) in both and a GEMM of the conv's size in
both (the floor), then counts XLA's top-level ops in the compiled step against PyTorch's aten
calls and profiles one eager step by op family.

--markdown writes its section between `<!-- step_time:SECTION:begin/end -->` markers, replacing
an earlier one and keeping the rest of the file.

GPU: --device gpu picks jax.devices('gpu') and torch.device('cuda'); sets
XLA_PYTHON_CLIENT_PREALLOCATE=false (both libraries share the card); --precision tf32 (default:
JAX's default for float32 matmuls on recent GPUs, and torch set to TF32 to match) or float32
(both forced to full float32). torch.backends.cudnn.benchmark = True (XLA autotunes too).
"""
import ctypes
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Dict, List

os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from aumn_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import thumos as thumos_config  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum('device', 'cpu', ['cpu', 'gpu'], 'Where both implementations run.')
flags.DEFINE_list('configs', ['synthetic', 'thumos'], 'Configs to time (small to large).')
flags.DEFINE_list('impls', ['jax', 'torch_eager', 'torch_compile'],
                  'Implementations; also jax_bf16 (config.compute_dtype=bfloat16), '
                  'torch_eager_1thread (CPU: eager with one intra-op '
                  'thread, to show the cost of OpenMP on a shared machine) and '
                  'torch_eager_gemm (the embedding conv as one GEMM, as aumn_jax on GPU).')
flags.DEFINE_integer('thumos_batch', None, 'Batch of the thumos config (default: 16 on gpu, '
                     '2 on cpu), the same for every implementation.')
flags.DEFINE_integer('rounds', 5, 'Alternating rounds over the implementations.',
                     lower_bound=1)
flags.DEFINE_integer('steps', 2, 'Timed train steps (and forward passes) per impl per round.',
                     lower_bound=1)
flags.DEFINE_integer('warmup', 2, 'Untimed train steps and forward passes per impl first.',
                     lower_bound=0)
flags.DEFINE_integer('threads', None, 'torch.set_num_threads (default: os.cpu_count()).',
                     lower_bound=1)
flags.DEFINE_enum('precision', 'tf32', ['tf32', 'float32'],
                  'GPU float32 matmul mode for both libraries (ignored on CPU).')
flags.DEFINE_enum('memory', 'auto', ['auto', 'off'], 'Measure peak memory (see docstring).')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_string('markdown', None, 'Write/replace this run\'s section in this Markdown file.')
flags.DEFINE_string('markdown_section', None,
                    'Which section of --markdown to write or replace: cpu, gpu or another '
                    'lower-case name (default: --device).')
flags.DEFINE_string('markdown_title', None, 'Heading of that section (default: CPU / GPU / '
                    'the section name).')
flags.DEFINE_string('probe', None, 'Internal: IMPL:CONFIG, measure peak RSS and print JSON.')
flags.DEFINE_integer('seed', 0, 'Batch seed.', lower_bound=0)
flags.DEFINE_bool('breakdown', False, 'Instead of the table: where the step time goes (the '
                  'conv alone, the GEMM floor, XLA kernels vs PyTorch op calls, op profile).')

NUM_CLASSES = 20
IMPLS = ('jax', 'jax_bf16', 'torch_eager', 'torch_compile', 'torch_eager_1thread',
         'torch_eager_gemm')
JAX_IMPLS = ('jax', 'jax_bf16')
SEEDS_IMPL = re.compile(r'jax_seeds([1-9][0-9]*)')


def is_jax(impl_name: str) -> bool:
  return impl_name in JAX_IMPLS or SEEDS_IMPL.fullmatch(impl_name) is not None


def num_seeds_of(impl_name: str) -> int:
  match = SEEDS_IMPL.fullmatch(impl_name)
  return int(match.group(1)) if match else 1
# Datasheet dense peaks (TFLOP/s): (name pattern, TF32 tensor core, FP32), first match wins.
GPU_PEAKS = (('H100 PCIe', 378.0, 51.2), ('H100 NVL', 417.5, 60.0), ('H100', 494.7, 66.9),
             ('H200', 494.7, 66.9), ('A100', 156.0, 19.5), ('L40S', 183.0, 91.6))


# ---------------------------------------------------------------------------------------------
# Configs, batches, FLOPs.

def make_config(name: str):
  if name == 'synthetic':
    c = synthetic_config.get_config()
  elif name == 'thumos':
    c = thumos_config.get_config()
    c.batch_size = FLAGS.thumos_batch or (16 if FLAGS.device == 'gpu' else 2)
  else:
    raise ValueError(f'--configs: unknown config {name!r} (synthetic, thumos)')
  return c


def make_batch(config, seed: int) -> Dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  b, t, f = config.batch_size, config.data.max_snippets, config.data.feature_dim
  x = np.maximum(rng.normal(size=(b, t, f)), 0).astype(np.float32)
  lengths = rng.integers(t // 4, t + 1, size=b)
  lengths[0] = t
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  labels = (rng.random((b, NUM_CLASSES)) < 0.1).astype(np.float32)
  labels[np.arange(b), rng.integers(0, NUM_CLASSES, b)] = 1.0
  return {'features': x, 'mask': mask, 'labels': labels}


def analytic_flops(config) -> Dict[str, float]:
  """Matmul/conv FLOPs (2 per multiply-add) of one train step and one forward (AUMN head).

  Backward costs twice a matmul's forward, except where one operand needs no gradient: the
  input features (conv: weight gradient only) and the stored bank (Wq M: weight gradient only).
  """
  b, t, f = config.batch_size, config.data.max_snippets, config.data.feature_dim
  d, l, c1 = config.model.dim, config.model.num_units, NUM_CLASSES + 1
  bt = b * t
  macs_full_grad = (bt * d                     # foreground attention
                    + 2 * bt * d * d           # H Wk, H Qr
                    + 2 * b * l * d * d        # M~ Wq, M~ Kr
                    + 4 * bt * l * d           # 3 cosines + the units' weighted sums
                    + b * l * 2 * d            # gate
                    + bt * d * l * c1          # H [W_1 .. W_L]
                    + 2 * bt * l * c1          # A-weighted sums (classifiers, biases)
                    + b * l * l * d)           # diversity Gram matrix
  macs_weight_grad = bt * 3 * f * d + l * d * d   # conv on X, Wq on the stored bank
  forward = 2 * (macs_full_grad + macs_weight_grad)
  train = forward + 2 * (2 * macs_full_grad + macs_weight_grad)
  return {'train': float(train), 'forward': float(forward - 2 * b * l * l * d)}


def _cost_flops(lowered) -> float:
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost['flops']) if cost and 'flops' in cost else float('nan')


# ---------------------------------------------------------------------------------------------
# Implementations.

class JaxImpl:
  """The project's jitted, sharded train and eval steps over all local devices; 'jax_bf16':
  the same with config.compute_dtype='bfloat16'; 'jax_seedsN': config.num_seeds=N."""

  def __init__(self, config, batch, keep_initial=True, name='jax'):
    self.name = name
    config = config.copy_and_resolve_references()
    if name == 'jax_bf16':
      config.compute_dtype = 'bfloat16'
    config.num_seeds = num_seeds_of(name)
    backend = 'gpu' if FLAGS.device == 'gpu' else 'cpu'
    self.devices = jax.local_devices(backend=backend)
    mesh = parallel.make_mesh(self.devices, num_seeds=config.num_seeds)
    parallel.check_batch_size(config.batch_size, mesh)
    self.state = train_step.init_state(config, NUM_CLASSES, mesh)
    self.initial = (train_step.replica({'params': self.state.params,
                                        'memory': self.state.memory}, 0)
                    if keep_initial else None)
    self.train_fn, self.eval_fn = train_step.jit_steps(config, mesh)
    self.batch = parallel.to_global(  # every seed its own copy of the batch
        {k: np.broadcast_to(v, (config.num_seeds,) + v.shape) for k, v in batch.items()},
        parallel.seed_batch_sharded(mesh))
    self.eval_batch = parallel.to_global(
        {k: batch[k] for k in train_step.EVAL_INPUTS}, parallel.batch_sharded(mesh))
    self.rng = train_step.dropout_rngs(config, mesh)

  def flops(self) -> Dict[str, float]:
    return {'train': _cost_flops(self.train_fn.lower(self.state, self.batch, self.rng)),
            'forward': _cost_flops(self.eval_fn.lower(self.state, self.eval_batch))}

  def warm_up(self, n: int) -> None:
    for _ in range(n):
      self.step()
      self.forward()

  def step(self) -> float:
    start = time.perf_counter()
    self.state, metrics = self.train_fn(self.state, self.batch, self.rng)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start

  def forward(self) -> float:
    start = time.perf_counter()
    jax.block_until_ready(self.eval_fn(self.state, self.eval_batch))
    return time.perf_counter() - start

  def peak_memory_mb(self) -> float:
    peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in self.devices]
    return max(peaks) / 2**20 if all(p is not None for p in peaks) else float('nan')


class TorchImpl:
  """benchmarks/torch_aumn.py, eager or under torch.compile."""

  def __init__(self, name, config, batch, initial=None):
    import torch  # pylint: disable=g-import-not-at-top
    from benchmarks import torch_aumn  # pylint: disable=g-import-not-at-top
    self.torch, self.lib, self.name, self.config = torch, torch_aumn, name, config
    self.compile_note = None
    self.device = torch.device('cuda' if FLAGS.device == 'gpu' else 'cpu')
    conv_impl = 'gemm' if name == 'torch_eager_gemm' else 'conv'
    if initial is not None:   # the JAX model's initial weights and bank
      self.model = torch_aumn.from_flax(config, NUM_CLASSES, initial, self.device, conv_impl)
    else:
      self.model = torch_aumn.create_model(config, NUM_CLASSES, conv_impl).to(self.device)
    self.optimizer = torch_aumn.make_optimizer(self.model, config.optim)
    self.batch = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
    self.compile_mode = None
    if name == 'torch_compile':
      self._compile(dynamic=False)   # static shapes, like jit: one graph per config
    else:
      self.loss_fn, self.eval_fn = torch_aumn.forward_loss, torch_aumn.eval_outputs

  def _compile(self, dynamic):
    self.torch._dynamo.reset()   # each config compiles afresh, as in a process of its own
    self.compile_mode = 'dynamic' if dynamic else 'static'
    self.loss_fn = self.lib.compile_train_step(dynamic=dynamic)
    self.eval_fn = self.lib.compile_eval_step(dynamic=dynamic)

  def warm_up(self, n: int) -> None:
    """n steps and forwards; compilation happens here (dynamic shapes if static fails)."""
    try:
      for _ in range(n):
        self.step()
        self.forward()
    except Exception as e:  # pylint: disable=broad-except
      if self.compile_mode != 'static':
        raise
      # Seen with torch 2.13 on CPU at the thumos shape: inductor's C++ codegen fails on the
      # static-shape graph (InductorError: KeyError 'bufNN') but compiles the dynamic one.
      msg = ' '.join(str(e).split()).split(' Set TORCHDYNAMO_VERBOSE')[0][:120]
      self.compile_note = f'static-shape compile failed ({type(e).__name__}: {msg})'
      print(f'  {self.name}: {self.compile_note}; retrying with dynamic=True', flush=True)
      self._compile(dynamic=True)
      for _ in range(n):
        self.step()
        self.forward()

  def _sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize(self.device)

  def _timed(self, fn) -> float:
    threads = self.torch.get_num_threads()
    if self.name == 'torch_eager_1thread':
      self.torch.set_num_threads(1)
    try:
      self._sync()
      start = time.perf_counter()
      fn()
      self._sync()
      return time.perf_counter() - start
    finally:
      self.torch.set_num_threads(threads)

  def step(self) -> float:
    return self._timed(lambda: self.lib.train_step(
        self.model, self.optimizer, self.batch, self.config.loss, loss_fn=self.loss_fn))

  def forward(self) -> float:
    return self._timed(lambda: self.lib.eval_step(
        self.model, self.batch['features'], self.batch['mask'], outputs_fn=self.eval_fn))

  def resident_bytes(self) -> int:
    """Bytes this implementation keeps between steps: params, grads, bank, Adam state, batch."""
    tensors = list(self.model.parameters()) + list(self.model.buffers())
    tensors += [p.grad for p in self.model.parameters() if p.grad is not None]
    tensors += [v for s in self.optimizer.state.values() for v in s.values()
                if self.torch.is_tensor(v)]
    tensors += list(self.batch.values())
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())

  def peak_memory_mb(self, others) -> float:
    """max_memory_allocated over one step, less what the other PyTorch impls hold (GPU)."""
    if self.device.type != 'cuda':
      return float('nan')
    torch = self.torch
    self._sync()
    torch.cuda.reset_peak_memory_stats(self.device)
    self.step()
    other = sum(o.resident_bytes() for o in others)
    return (torch.cuda.max_memory_allocated(self.device) - other) / 2**20


# ---------------------------------------------------------------------------------------------
# CPU peak memory: one fresh subprocess per (config, impl).

def _status_kb(field: str) -> int:
  with open('/proc/self/status', encoding='ascii') as f:
    return int(re.search(rf'^{field}:\s+(\d+) kB', f.read(), re.M).group(1))


def run_probe(spec: str) -> None:
  impl_name, config_name = spec.split(':')
  if not is_jax(impl_name):
    from benchmarks import torch_aumn  # pylint: disable=g-import-not-at-top,unused-import
  baseline_kb = _status_kb('VmRSS')   # libraries loaded, nothing allocated
  config = make_config(config_name)
  batch = make_batch(config, FLAGS.seed)
  if is_jax(impl_name):
    impl = JaxImpl(config, batch, keep_initial=False, name=impl_name)
    del batch       # the device copy is what the step uses
  else:
    impl = TorchImpl(impl_name, config, batch)
  impl.warm_up(FLAGS.warmup)
  try:   # hand freed compile-time memory back and restart the high-water mark
    ctypes.CDLL('libc.so.6').malloc_trim(0)
    with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
      f.write('5')
    hwm_reset = True
  except OSError:
    hwm_reset = False
  for _ in range(2):
    impl.step()
  peak_mb = (_status_kb('VmHWM') - baseline_kb) / 1024
  print(json.dumps({'peak_mem_mb': peak_mb, 'hwm_reset': hwm_reset}))


def probe_memory_cpu(impl_name: str, config_name: str) -> float:
  cmd = [sys.executable, '-m', 'benchmarks.step_time', f'--probe={impl_name}:{config_name}',
         '--device=cpu', f'--seed={FLAGS.seed}', f'--warmup={FLAGS.warmup}']
  if FLAGS.thumos_batch:
    cmd.append(f'--thumos_batch={FLAGS.thumos_batch}')
  if FLAGS.threads:
    cmd.append(f'--threads={FLAGS.threads}')
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    print(f'  memory probe {impl_name}:{config_name} failed:\n{proc.stderr[-2000:]}')
    return float('nan')
  return json.loads(lines[-1])['peak_mem_mb']


# ---------------------------------------------------------------------------------------------
# The alternating measurement.

def bench_config(name: str) -> List[Dict[str, Any]]:
  config = make_config(name)
  batch = make_batch(config, FLAGS.seed)
  shape = (f'{config.batch_size}x{config.data.max_snippets}x{config.data.feature_dim}, '
            f'D={config.model.dim}, L={config.model.num_units}')
  print(f'\n== {name}: {shape}', flush=True)
  impls, initial = {}, None
  if 'jax' in FLAGS.impls:
    impls['jax'] = JaxImpl(config, batch)
    initial = impls['jax'].initial
  for impl_name in FLAGS.impls:
    if impl_name != 'jax' and is_jax(impl_name):
      impls[impl_name] = JaxImpl(config, batch, keep_initial=False, name=impl_name)
  for impl_name in IMPLS[2:]:
    if impl_name in FLAGS.impls:
      impls[impl_name] = TorchImpl(impl_name, config, batch, initial)
  del batch

  for impl in impls.values():
    start = time.perf_counter()
    impl.warm_up(FLAGS.warmup)
    print(f'  warm-up {impl.name}: {time.perf_counter() - start:.1f} s '
          '(compilation included)', flush=True)

  names = list(impls)
  load_before = os.getloadavg()[0]
  steps = {n: [] for n in names}
  forwards = {n: [] for n in names}
  round_medians = {n: [] for n in names}
  for r in range(FLAGS.rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for n in order:
      s = [impls[n].step() for _ in range(FLAGS.steps)]
      f = [impls[n].forward() for _ in range(FLAGS.steps)]
      steps[n] += s
      forwards[n] += f
      round_medians[n].append(float(np.median(s)))
    print(f'  round {r + 1}/{FLAGS.rounds}: ' + ', '.join(
        f'{n} {round_medians[n][-1]:.3f} s' for n in names), flush=True)

  load = (load_before, os.getloadavg()[0])   # the machine may be shared: say how busy it was
  flops_xla = impls['jax'].flops() if 'jax' in impls else None
  flops_ana = analytic_flops(config) if config.model.head == 'aumn' else None
  # XLA's count when it sees the matmuls; on GPU they are cuBLAS/cuDNN custom calls it does not
  # count (jax 0.11.2 on an H200: nothing before compilation, 7.4e9 of ~5e11 after), so there
  # the analytic count is the one that means something.
  xla_ok = flops_xla is not None and all(np.isfinite(v) for v in flops_xla.values()) and (
      flops_ana is None or flops_xla['train'] >= 0.5 * flops_ana['train'])
  flops = flops_xla if xla_ok else flops_ana

  rows = []
  for n in names:
    if FLAGS.memory == 'off':
      mem = float('nan')
    elif FLAGS.device == 'cpu':
      mem = probe_memory_cpu(n, name)
    elif is_jax(n):
      mem = impls[n].peak_memory_mb()
    else:
      mem = impls[n].peak_memory_mb([impls[o] for o in names if not is_jax(o) and o != n])
    med = float(np.median(steps[n]))
    row = {'config': name, 'impl': n, 'batch_size': config.batch_size, 'shape': shape,
           'step_median_s': med, 'step_min_s': float(np.min(steps[n])),
           'step_max_s': float(np.max(steps[n])),
           'forward_median_s': float(np.median(forwards[n])),
           'forward_min_s': float(np.min(forwards[n])),
           'forward_max_s': float(np.max(forwards[n])),
           'peak_mem_mb': mem, 'steps_timed': len(steps[n]), 'loadavg_1min': load,
           'step_round_medians_s': round_medians[n], 'num_seeds': num_seeds_of(n),
           'seed_steps_per_s': num_seeds_of(n) / med}
    if getattr(impls[n], 'compile_mode', None):
      row['compile_mode'] = impls[n].compile_mode
      if impls[n].compile_note:
        row['compile_note'] = impls[n].compile_note
    if flops:
      row['flops_source'] = 'xla_cost_analysis' if xla_ok else 'analytic'
      row['train_flops'] = flops['train'] * num_seeds_of(n)
      row['train_tflops_per_s'] = row['train_flops'] / med / 1e12
      row['forward_flops'] = flops['forward'] * num_seeds_of(n)
      row['forward_tflops_per_s'] = row['forward_flops'] / row['forward_median_s'] / 1e12
    if flops_ana:
      row['train_flops_analytic'] = flops_ana['train']
    if 'jax' in impls and n != 'jax':
      per_round = [t / j for t, j in zip(round_medians[n], round_medians['jax'])]
      row['jax_speedup'] = med / float(np.median(steps['jax']))
      row['jax_speedup_round_min'] = min(per_round)
      row['jax_speedup_round_max'] = max(per_round)
      row['jax_forward_speedup'] = row['forward_median_s'] / float(np.median(forwards['jax']))
    rows.append(row)
  return rows


# ---------------------------------------------------------------------------------------------
# --breakdown: where the time goes.

def _times(fn, n):
  times = []
  for _ in range(n):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def _torch_op_profile(impl) -> Dict[str, Any]:
  """Self time of one eager train step by op family, from torch.profiler."""
  from torch.profiler import profile, ProfilerActivity  # pylint: disable=g-import-not-at-top
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    impl.step()
  families = {'conv (mkldnn fwd + backward)': ('convolution',),
              'matmul (mm, bmm, addmm)': ('::mm', '::bmm', '::addmm'),
              'sort / top-k': ('sort',),
              'Adam update (foreach / in-place)': ('_foreach', 'addcmul_', 'addcdiv_', 'lerp_',
                                                   'sqrt', 'mul_', 'add_')}
  totals, calls, total = {}, 0, 0.0
  for ev in prof.key_averages():
    if not ev.key.startswith('aten::'):
      continue
    calls += ev.count
    total += ev.self_cpu_time_total
    fam = next((f for f, keys in families.items() if any(k in ev.key for k in keys)),
               'elementwise / reductions / copies (the rest)')
    totals[fam] = totals.get(fam, 0.0) + ev.self_cpu_time_total
  return {'aten_calls': calls, 'self_s': total / 1e6,
          'families_s': {k: v / 1e6 for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}}


def _xla_kernel_counts(jax_impl) -> Dict[str, int]:
  """Top-level ops of the compiled (optimised) JAX train step: what XLA actually runs."""
  text = jax_impl.train_fn.lower(jax_impl.state, jax_impl.batch, jax_impl.rng).compile().as_text()
  entry = text[text.rindex('ENTRY'):]
  ops = re.findall(r'=\s*\S+\s+([a-z\-]+)\(', entry)
  counts = {}
  for op in ops:
    counts[op] = counts.get(op, 0) + 1
  return counts


def breakdown_config(name: str) -> Dict[str, Any]:
  """Alternates: JAX step, PyTorch eager step, the embedding conv alone (forward + weight
  gradient, what the step needs of it) in both, and a GEMM of the conv's size in both (the
  floor any implementation has to pay). Then XLA's kernel count and PyTorch's op profile."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  config = make_config(name)
  batch = make_batch(config, FLAGS.seed)
  b, t, f = batch['features'].shape
  d = config.model.dim
  jax_impl = JaxImpl(config, batch)
  torch_impl = TorchImpl('torch_eager', config, batch, jax_impl.initial)

  x = jax_impl.batch['features']
  # A random output gradient, passed as an argument: XLA would simplify a constant one.
  g_np = np.random.default_rng(2).normal(size=(b, t, d)).astype(np.float32)
  g = jax.device_put(g_np, x.sharding)
  conv = nn.Conv(d, kernel_size=(3,), padding='SAME')
  conv_params = conv.init(jax.random.PRNGKey(0), x[:1])
  # value_and_grad: the forward too (grad alone lets XLA drop it: the loss is linear in it).
  jax_conv = jax.jit(jax.value_and_grad(lambda p, xx, gg: jnp.sum(conv.apply(p, xx) * gg)))
  t_conv = torch.nn.Conv1d(f, d, 3, padding=1).to(torch_impl.device)
  tx, tg = torch_impl.batch['features'], torch.from_numpy(g_np).to(torch_impl.device)

  def torch_conv():
    t_conv.zero_grad(set_to_none=True)
    (t_conv(tx.transpose(1, 2)).transpose(1, 2) * tg).sum().backward()
    torch_impl._sync()  # pylint: disable=protected-access

  rng = np.random.default_rng(1)
  lhs = rng.normal(size=(b * t, 3 * f)).astype(np.float32)
  rhs = rng.normal(size=(3 * f, d)).astype(np.float32)
  j_lhs, j_rhs = jnp.asarray(lhs), jnp.asarray(rhs)
  t_lhs = torch.from_numpy(lhs).to(torch_impl.device)
  t_rhs = torch.from_numpy(rhs).to(torch_impl.device)
  jax_dot = jax.jit(jnp.dot)

  def torch_gemm():
    torch.mm(t_lhs, t_rhs)
    torch_impl._sync()  # pylint: disable=protected-access

  torch_1thread = TorchImpl('torch_eager_1thread', config, batch, jax_impl.initial)
  parts = {
      'jax step': jax_impl.step,
      'torch_eager step': torch_impl.step,
      'torch_eager step, 1 thread': torch_1thread.step,
      'jax conv fwd+wgrad': lambda: jax.block_until_ready(jax_conv(conv_params, x, g)),
      'torch conv fwd+wgrad': torch_conv,
      'jax GEMM': lambda: jax_dot(j_lhs, j_rhs).block_until_ready(),
      'torch GEMM': torch_gemm,
  }
  for fn in parts.values():
    for _ in range(FLAGS.warmup):
      fn()
  samples = {k: [] for k in parts}
  for _ in range(FLAGS.rounds):
    for k, fn in parts.items():
      samples[k] += _times(fn, FLAGS.steps)
  med = {k: float(np.median(v)) for k, v in samples.items()}
  gemm_flops = 2.0 * b * t * 3 * f * d
  flops = jax_impl.flops()['train']
  return {'config': name, 'shape': f'{b}x{t}x{f}, D={d}, L={config.model.num_units}',
          'median_s': med, 'train_flops': flops, 'conv_flops_fwd_wgrad': 2 * gemm_flops,
          'gemm_gflops_per_s': {k: gemm_flops / med[f'{k} GEMM'] / 1e9 for k in ('jax', 'torch')},
          'xla_kernels': _xla_kernel_counts(jax_impl), 'torch_profile': _torch_op_profile(torch_impl)}


def breakdown_markdown(results, device, command) -> str:
  date = datetime.date.today().isoformat()
  title = FLAGS.markdown_title or f'Where the time goes ({device["summary"]}, {date})'
  out = [f'### {title}', '', '```bash', command,
         '```', '']
  for r in results:
    m = r['median_s']
    floor = r['train_flops'] / (1e9 * max(r['gemm_gflops_per_s'].values()))
    out += [f'**{r["config"]}** ({r["shape"]}; train step {r["train_flops"]:.3g} FLOPs, of '
            f'which the embedding conv (forward + weight gradient) {r["conv_flops_fwd_wgrad"]:.3g}'
            f' = {100 * r["conv_flops_fwd_wgrad"] / r["train_flops"]:.0f} %):', '',
            '| | JAX (XLA) | PyTorch eager |', '| --- | --- | --- |',
            f'| train step, median s | {m["jax step"]:.3f} | {m["torch_eager step"]:.3f} '
            f'({m["torch_eager step, 1 thread"]:.3f} with 1 thread) |',
            f'| conv forward + weight gradient alone, s | {m["jax conv fwd+wgrad"]:.3f} | '
            f'{m["torch conv fwd+wgrad"]:.3f} |',
            f'| rest of the step (difference), s | {m["jax step"] - m["jax conv fwd+wgrad"]:.3f}'
            f' | {m["torch_eager step"] - m["torch conv fwd+wgrad"]:.3f} |',
            f'| GEMM of the conv\'s size [{r["shape"].split(",")[0]} → (B·T)×3F @ 3F×D], GFLOP/s '
            f'| {r["gemm_gflops_per_s"]["jax"]:.0f} | {r["gemm_gflops_per_s"]["torch"]:.0f} |',
            f'| kernels / op calls per step | {sum(r["xla_kernels"].values())} XLA ops '
            f'({r["xla_kernels"].get("fusion", 0)} fusions, '
            f'{r["xla_kernels"].get("convolution", 0)} convolutions, '
            f'{r["xla_kernels"].get("dot", 0)} dots, '
            f'{r["xla_kernels"].get("custom-call", 0)} custom calls) | '
            f'{r["torch_profile"]["aten_calls"]} aten calls |', '',
            f'Floor: all the step\'s FLOPs at the best GEMM rate measured here = {floor:.3f} s. '
            f'Load average {r["loadavg_1min"][0]:.1f} → {r["loadavg_1min"][1]:.1f}. '
            'PyTorch eager self time by op family (torch.profiler, one step, share of aten '
            'self time): ' + ', '.join(
                f'{k} {100 * v / r["torch_profile"]["self_s"]:.0f} %'
                for k, v in r['torch_profile']['families_s'].items()) + '.', '']
  return '\n'.join(out)


def run_breakdown(device, command) -> None:
  results = []
  for name in FLAGS.configs:
    load_before = os.getloadavg()[0]
    results.append(breakdown_config(name))
    results[-1]['loadavg_1min'] = (load_before, os.getloadavg()[0])
  text = breakdown_markdown(results, device, command)
  print('\n' + text)
  if FLAGS.json:
    with open(FLAGS.json, 'w', encoding='utf-8') as f:
      json.dump({'device': device['summary'], 'command': command,
                 'breakdown': _json_safe(results)}, f,
                indent=1)
  if FLAGS.markdown:
    section = FLAGS.markdown_section or f'{FLAGS.device}_profile'
    write_markdown(FLAGS.markdown, section, text)


# ---------------------------------------------------------------------------------------------
# Reporting.

def describe_device() -> Dict[str, Any]:
  info = {'python': platform.python_version(), 'jax': jax.__version__}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    info['torch'] = torch.__version__
    info['torch_threads'] = torch.get_num_threads()
  except ImportError:
    pass
  if FLAGS.device == 'gpu':
    devs = jax.local_devices(backend='gpu')
    info['name'] = devs[0].device_kind
    info['count'] = len(devs)
    info['precision'] = FLAGS.precision
    peak = next((p for p in GPU_PEAKS if p[0] in info['name']), None)
    if peak:
      info['peak_tf32_tflops'], info['peak_fp32_tflops'] = peak[1], peak[2]
    info['summary'] = f'{len(devs)} x {info["name"]} ({FLAGS.precision} matmuls)'
  else:
    model = 'unknown CPU'
    try:
      with open('/proc/cpuinfo', encoding='utf-8') as f:
        model = re.search(r'^model name\s*:\s*(.*)$', f.read(), re.M).group(1)
    except (OSError, AttributeError):
      pass
    info['name'] = model
    info['cores'] = os.cpu_count()
    info['jax_devices'] = len(jax.local_devices(backend='cpu'))
    info['summary'] = f'{model}, {os.cpu_count()} cores'
  return info


def _fmt_mem(mb):
  return '-' if mb is None or math.isnan(mb) else f'{mb:,.0f}'


def table(rows, device) -> str:
  lines = ['| config (B) | impl | step median s (min–max) | forward median s (min–max) | '
           'seed-steps/s | peak mem MB | train TFLOP/s | JAX speed-up (per-round range) |',
           '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    speed = '–'
    if 'jax_speedup' in r:
      speed = (f'{r["jax_speedup"]:.2f}× ({r["jax_speedup_round_min"]:.2f}–'
               f'{r["jax_speedup_round_max"]:.2f})')
    tf = r.get('train_tflops_per_s')
    tf = '-' if tf is None else (f'{tf:.3f}' if tf < 1 else f'{tf:.1f}')
    if tf != '-' and 'peak_tf32_tflops' in device:
      peak = device['peak_tf32_tflops'] if device.get('precision') == 'tf32' else device[
          'peak_fp32_tflops']
      tf += f' ({100 * r["train_tflops_per_s"] / peak:.1f} % of peak)'
    lines.append(
        f'| {r["config"]} ({r["batch_size"]}) | {r["impl"]} | {r["step_median_s"]:.4f} '
        f'({r["step_min_s"]:.4f}–{r["step_max_s"]:.4f}) | {r["forward_median_s"]:.4f} '
        f'({r["forward_min_s"]:.4f}–{r["forward_max_s"]:.4f}) | '
        f'{r.get("seed_steps_per_s", 1 / r["step_median_s"]):.2f} | {_fmt_mem(r["peak_mem_mb"])} '
        f'| {tf} | {speed} |')
  return '\n'.join(lines)


def markdown_section(section: str, rows, device, command: str) -> str:
  date = datetime.date.today().isoformat()
  title = FLAGS.markdown_title or {'cpu': 'CPU', 'gpu': 'GPU'}.get(section, section)
  out = [f'## {title}', '', f'Measured {date} on {device["summary"]} with jax '
         f'{device["jax"]}' + (f', torch {device["torch"]}' if 'torch' in device else '')
         + (f' ({device["torch_threads"]} torch threads)'
            if FLAGS.device == 'cpu' and 'torch_threads' in device else '') + '.',
         '', '```bash', command, '```', '', table(rows, device), '']
  shapes = sorted({(r['config'], r['shape']) for r in rows})
  out.append('Shapes (B×T×F): ' + '; '.join(f'{c}: {s}' for c, s in shapes) + '.')
  loads = {r['config']: r['loadavg_1min'] for r in rows}
  out.append('1-minute load average before → after the timed rounds (other jobs on the machine '
             'count here): ' + '; '.join(f'{c}: {a:.1f} → {b:.1f}' for c, (a, b) in loads.items())
             + '.')
  flops = {r['config']: r for r in rows if 'train_flops' in r}
  if flops:
    source = next(iter(flops.values())).get('flops_source', 'xla_cost_analysis')
    out.append('Train-step FLOPs (' + ('XLA cost analysis of the JAX step' if source ==
               'xla_cost_analysis' else 'analytic: XLA does not count cuBLAS/cuDNN calls') +
               '; analytic matmul count in brackets): ' + '; '.join(
                   f'{c}: {r["train_flops"]:.3g} ({r.get("train_flops_analytic", float("nan")):.3g})'
                   for c, r in flops.items()) + '.')
  for r in rows:
    if r.get('compile_mode'):
      out.append(f'{r["impl"]} on {r["config"]}: {r["compile_mode"]} shapes'
                 + (f' — {r["compile_note"]}' if r.get('compile_note') else '') + '.')
  if section == 'gpu' and 'peak_tf32_tflops' in device:
    out.append(f'Peak used for "% of peak": datasheet dense '
               f'{"TF32 tensor-core" if device["precision"] == "tf32" else "FP32"} '
               f'{device["peak_tf32_tflops"] if device["precision"] == "tf32" else device["peak_fp32_tflops"]}'
               f' TFLOP/s ({device["name"]}).')
  out.append('')
  return '\n'.join(out)


def write_markdown(path: str, section: str, text: str) -> None:
  """Replaces this section between its markers, or appends it (the rest of the file is kept)."""
  begin, end = f'<!-- step_time:{section}:begin -->', f'<!-- step_time:{section}:end -->'
  block = f'{begin}\n{text}{end}\n'
  old = ''
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      old = f.read()
  if begin in old and end in old:
    new = old[:old.index(begin)] + block + old[old.index(end) + len(end) + 1:]
  else:
    new = (old.rstrip('\n') + '\n\n' if old else '# Benchmarks\n\n') + block
  with open(path, 'w', encoding='utf-8') as f:
    f.write(new)


def _json_safe(x):
  """NaN (not measured) -> null: strict JSON readers reject NaN."""
  if isinstance(x, float) and math.isnan(x):
    return None
  if isinstance(x, dict):
    return {k: _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  return x


def setup_frameworks() -> None:
  if FLAGS.device == 'gpu' and FLAGS.precision == 'float32':
    jax.config.update('jax_default_matmul_precision', 'float32')
  if not any(i.startswith('torch') for i in FLAGS.impls):
    return
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(FLAGS.threads or os.cpu_count())
  if FLAGS.device == 'gpu':
    tf32 = FLAGS.precision == 'tf32'
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True


@cli.user_errors
def main(argv):
  del argv
  if FLAGS.markdown_section and not re.fullmatch(r'[a-z0-9_]+', FLAGS.markdown_section):
    raise app.UsageError('--markdown_section: lower-case letters, digits and _ only')
  unknown = {i for i in FLAGS.impls if i not in IMPLS and not is_jax(i)}
  if unknown:
    raise app.UsageError(f'--impls: unknown {sorted(unknown)} (choose from {IMPLS} or jax_seedsN)')
  cli.check_output_paths(json=FLAGS.json, markdown=FLAGS.markdown)
  setup_frameworks()
  if FLAGS.probe:
    run_probe(FLAGS.probe)
    return
  device = describe_device()
  command = 'python -m benchmarks.step_time ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])
  print(f'{device["summary"]}; jax {device["jax"]}, torch {device.get("torch", "absent")}')
  if FLAGS.breakdown:
    run_breakdown(device, command)
    return
  rows = []
  for name in FLAGS.configs:
    rows += bench_config(name)
  print('\n' + table(rows, device))
  if FLAGS.json:
    with open(FLAGS.json, 'w', encoding='utf-8') as f:
      json.dump({'device': device['summary'], 'device_info': device, 'command': command,
                 'date': datetime.date.today().isoformat(), 'rounds': FLAGS.rounds,
                 'steps_per_round': FLAGS.steps, 'warmup': FLAGS.warmup,
                 'rows': _json_safe(rows)},
                f, indent=1)
    print(f'wrote {FLAGS.json}')
  if FLAGS.markdown:
    section = FLAGS.markdown_section or FLAGS.device
    write_markdown(FLAGS.markdown, section, markdown_section(section, rows, device, command))
    print(f'wrote the {section} section of {FLAGS.markdown}')


if __name__ == '__main__':
  cli.run(main)
