r"""Train-step and inference time: the JAX step vs the PyTorch baseline, same config and batch.

  python -m benchmarks.step_time [--device cpu|gpu] [--configs synthetic,thumos]
      [--thumos_batch N] [--impls jax,torch_eager,torch_compile] [--rounds 5] [--steps 2]
      [--json OUT.json] [--markdown BENCHMARKS.md --markdown_section cpu|gpu]

Implementations (one process, one batch, the same initial weights):
  jax            the project's own code: train_step.init_state + train_step.jit_steps on a
                 parallel.make_mesh over all local devices of --device (what train.py runs);
  torch_eager    benchmarks/torch_aumn.py: eager PyTorch, torch.optim.Adam(weight_decay);
  torch_compile  the same with forward + loss (and backward, through AOTAutograd) under
                 torch.compile; the optimizer stays eager.
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
sys.path.insert(0, REPO)

from aumn_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from aumn_jax import train_step  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import synthetic as synthetic_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import thumos as thumos_config  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum('device', 'cpu', ['cpu', 'gpu'], 'Where both implementations run.')
flags.DEFINE_list('configs', ['synthetic', 'thumos'], 'Configs to time (small to large).')
flags.DEFINE_list('impls', ['jax', 'torch_eager', 'torch_compile'], 'Implementations.')
flags.DEFINE_integer('thumos_batch', None, 'Batch of the thumos config (default: 16 on gpu, '
                     '2 on cpu), the same for every implementation.')
flags.DEFINE_integer('rounds', 5, 'Alternating rounds over the implementations.')
flags.DEFINE_integer('steps', 2, 'Timed train steps (and forward passes) per impl per round.')
flags.DEFINE_integer('warmup', 2, 'Untimed train steps and forward passes per impl first.')
flags.DEFINE_integer('threads', None, 'torch.set_num_threads (default: os.cpu_count()).')
flags.DEFINE_enum('precision', 'tf32', ['tf32', 'float32'],
                  'GPU float32 matmul mode for both libraries (ignored on CPU).')
flags.DEFINE_enum('memory', 'auto', ['auto', 'off'], 'Measure peak memory (see docstring).')
flags.DEFINE_string('json', None, 'Write the results here as JSON.')
flags.DEFINE_string('markdown', None, 'Write/replace this run\'s section in this Markdown file.')
flags.DEFINE_string('markdown_section', None,
                    'Which section of --markdown to write or replace: cpu, gpu or another '
                    'lower-case name (default: --device).')
flags.DEFINE_string('probe', None, 'Internal: IMPL:CONFIG, measure peak RSS and print JSON.')
flags.DEFINE_integer('seed', 0, 'Batch seed.')

NUM_CLASSES = 20
IMPLS = ('jax', 'torch_eager', 'torch_compile')
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
  """The project's jitted, sharded train and eval steps over all local devices."""
  name = 'jax'

  def __init__(self, config, batch, keep_initial=True):
    backend = 'gpu' if FLAGS.device == 'gpu' else 'cpu'
    self.devices = jax.local_devices(backend=backend)
    mesh = parallel.make_mesh(self.devices)
    parallel.check_batch_size(config.batch_size, mesh)
    self.state = train_step.init_state(config, NUM_CLASSES, mesh)
    self.initial = (jax.device_get({'params': self.state.params, 'memory': self.state.memory})
                    if keep_initial else None)
    self.train_fn, self.eval_fn = train_step.jit_steps(config, mesh)
    self.batch = parallel.to_global(batch, mesh)
    self.eval_batch = {'features': self.batch['features'], 'mask': self.batch['mask']}
    self.rng = jax.random.PRNGKey(0)

  def flops(self) -> Dict[str, float]:
    return {'train': _cost_flops(self.train_fn.lower(self.state, self.batch, self.rng)),
            'forward': _cost_flops(self.eval_fn.lower(self.state, self.eval_batch))}

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
    self.device = torch.device('cuda' if FLAGS.device == 'gpu' else 'cpu')
    if initial is not None:   # the JAX model's initial weights and bank
      self.model = torch_aumn.from_flax(config, NUM_CLASSES, initial, self.device)
    else:
      self.model = torch_aumn.create_model(config, NUM_CLASSES).to(self.device)
    self.optimizer = torch_aumn.make_optimizer(self.model, config.optim)
    self.batch = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
    compiled = name == 'torch_compile'
    self.loss_fn = torch_aumn.compile_train_step() if compiled else torch_aumn.forward_loss
    self.eval_fn = torch_aumn.compile_eval_step() if compiled else torch_aumn.eval_outputs

  def _sync(self):
    if self.device.type == 'cuda':
      self.torch.cuda.synchronize(self.device)

  def step(self) -> float:
    self._sync()
    start = time.perf_counter()
    self.lib.train_step(self.model, self.optimizer, self.batch, self.config.loss,
                        loss_fn=self.loss_fn)
    self._sync()
    return time.perf_counter() - start

  def forward(self) -> float:
    self._sync()
    start = time.perf_counter()
    self.lib.eval_step(self.model, self.batch['features'], self.batch['mask'],
                       outputs_fn=self.eval_fn)
    self._sync()
    return time.perf_counter() - start

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
  if impl_name != 'jax':
    from benchmarks import torch_aumn  # pylint: disable=g-import-not-at-top,unused-import
  baseline_kb = _status_kb('VmRSS')   # libraries loaded, nothing allocated
  config = make_config(config_name)
  batch = make_batch(config, FLAGS.seed)
  if impl_name == 'jax':
    impl = JaxImpl(config, batch, keep_initial=False)
    del batch       # the device copy is what the step uses
  else:
    impl = TorchImpl(impl_name, config, batch)
  for _ in range(FLAGS.warmup):
    impl.step()
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
  for impl_name in ('torch_eager', 'torch_compile'):
    if impl_name in FLAGS.impls:
      impls[impl_name] = TorchImpl(impl_name, config, batch, initial)
  del batch

  for impl in impls.values():
    start = time.perf_counter()
    for _ in range(FLAGS.warmup):
      impl.step()
      impl.forward()
    print(f'  warm-up {impl.name}: {time.perf_counter() - start:.1f} s '
          '(compilation included)', flush=True)

  names = list(impls)
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

  flops_xla = impls['jax'].flops() if 'jax' in impls else None
  flops_ana = analytic_flops(config) if config.model.head == 'aumn' else None
  flops = flops_xla or flops_ana

  rows = []
  for n in names:
    if FLAGS.memory == 'off':
      mem = float('nan')
    elif FLAGS.device == 'cpu':
      mem = probe_memory_cpu(n, name)
    elif n == 'jax':
      mem = impls[n].peak_memory_mb()
    else:
      mem = impls[n].peak_memory_mb([impls[o] for o in names if o not in ('jax', n)])
    med = float(np.median(steps[n]))
    row = {'config': name, 'impl': n, 'batch_size': config.batch_size, 'shape': shape,
           'step_median_s': med, 'step_min_s': float(np.min(steps[n])),
           'step_max_s': float(np.max(steps[n])),
           'forward_median_s': float(np.median(forwards[n])),
           'forward_min_s': float(np.min(forwards[n])),
           'forward_max_s': float(np.max(forwards[n])),
           'peak_mem_mb': mem, 'steps_timed': len(steps[n]),
           'step_round_medians_s': round_medians[n]}
    if flops:
      row['train_flops'] = flops['train']
      row['train_tflops_per_s'] = flops['train'] / med / 1e12
      row['forward_flops'] = flops['forward']
      row['forward_tflops_per_s'] = flops['forward'] / row['forward_median_s'] / 1e12
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
           'peak mem MB | train TFLOP/s | JAX speed-up (per-round range) |',
           '| --- | --- | --- | --- | --- | --- | --- |']
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
        f'({r["forward_min_s"]:.4f}–{r["forward_max_s"]:.4f}) | {_fmt_mem(r["peak_mem_mb"])} '
        f'| {tf} | {speed} |')
  return '\n'.join(lines)


def markdown_section(section: str, rows, device, command: str) -> str:
  date = datetime.date.today().isoformat()
  title = {'cpu': 'CPU', 'gpu': 'GPU'}.get(section, section)
  out = [f'## {title}', '', f'Measured {date} on {device["summary"]} with jax '
         f'{device["jax"]}' + (f', torch {device["torch"]}' if 'torch' in device else '')
         + (f' ({device["torch_threads"]} torch threads)' if section == 'cpu' else '') + '.',
         '', '```bash', command, '```', '', table(rows, device), '']
  shapes = sorted({(r['config'], r['shape']) for r in rows})
  out.append('Shapes (B×T×F): ' + '; '.join(f'{c}: {s}' for c, s in shapes) + '.')
  flops = {r['config']: r for r in rows if 'train_flops' in r}
  if flops:
    out.append('Train-step FLOPs (XLA cost analysis of the JAX step; analytic matmul count in '
               'brackets): ' + '; '.join(
                   f'{c}: {r["train_flops"]:.3g} ({r.get("train_flops_analytic", float("nan")):.3g})'
                   for c, r in flops.items()) + '.')
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


def main(argv):
  del argv
  if FLAGS.markdown_section and not re.fullmatch(r'[a-z0-9_]+', FLAGS.markdown_section):
    raise app.UsageError('--markdown_section: lower-case letters, digits and _ only')
  unknown = set(FLAGS.impls) - set(IMPLS)
  if unknown:
    raise app.UsageError(f'--impls: unknown {sorted(unknown)} (choose from {IMPLS})')
  setup_frameworks()
  if FLAGS.probe:
    run_probe(FLAGS.probe)
    return
  device = describe_device()
  command = 'python -m benchmarks.step_time ' + ' '.join(sys.argv[1:])
  print(f'{device["summary"]}; jax {device["jax"]}, torch {device.get("torch", "absent")}')
  rows = []
  for name in FLAGS.configs:
    rows += bench_config(name)
  print('\n' + table(rows, device))
  if FLAGS.json:
    with open(FLAGS.json, 'w', encoding='utf-8') as f:
      json.dump({'device': device['summary'], 'device_info': device, 'command': command,
                 'date': datetime.date.today().isoformat(), 'rounds': FLAGS.rounds,
                 'steps_per_round': FLAGS.steps, 'warmup': FLAGS.warmup, 'rows': rows},
                f, indent=1)
    print(f'wrote {FLAGS.json}')
  if FLAGS.markdown:
    section = FLAGS.markdown_section or FLAGS.device
    write_markdown(FLAGS.markdown, section, markdown_section(section, rows, device, command))
    print(f'wrote the {section} section of {FLAGS.markdown}')


if __name__ == '__main__':
  app.run(main)
