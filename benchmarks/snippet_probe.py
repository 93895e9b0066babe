"""How much can a unit-specific classifier add on a regime? Fully supervised snippet probes.

Run:  python benchmarks/snippet_probe.py [--regimes thumos,fewvideo,...] [--data_seed 1]
          [--seeds 0,1,2] [--steps 1500] [--workdir /tmp/aumn_robustness]
          [--json OUT] [--markdown OUT.md]
      python benchmarks/snippet_probe.py --dataset thumos14 --data_dir DIR   (a built dump)

AUMN's classifier (docs/method.md §2, §8) is BaS-Net's beside a mixture of L linear classifiers
gated per snippet by the read attention. Whatever weak supervision makes of it, it can only beat
mil's single classifier where a snippet's class is something one linear classifier on the
embedding cannot express. This script asks that question with the labels WTAL never sees: on
the regime's training split (benchmarks/robustness.py builds it; the same --workdir reuses it),
every snippet labelled with the class of the instance covering it (robustness's rule: half of
the snippet inside; snippets inside instances of two classes are left out) or background, four
probes are trained by cross-entropy, and scored on the test split (both splits keep at most
MAX_PER_VIDEO snippets of a video):
  linear   softmax(x W + b) on the snippet's input x (per-snippet LayerNorm, the skeleton's
           input_norm)
  mil      softmax(z W + b), z = relu(x A + c) with D = --dim units: mil's classifier on an
           embedding (the skeleton's conv seen at one snippet)
  aumn     softmax(z W + b + sum_l g_l(z) (z W_l + b_l)), g = softmax(z Q / tau) over L =
           --units units, W_l starting at 0: AUMN's shared classifier beside unit classifiers,
           the gate learned from the snippet. The model's read attention is a softmax of
           cosines / tau; this gate is a free version of it (Q's scale is learned, so it can
           be as soft or as sharp as training wants): the mixture is at least as expressive
  video    softmax([x, mean_video x] W + b): linear on the snippet and its video's mean input,
           i.e. with the video as context (what the MIL video score sees)
Reported per probe, mean ± sample std over --seeds (probe initialisation and minibatch order):
  action acc   test snippets inside one class's instance whose argmax over the C action
               columns is that class: what a snippet shows of its class
  all acc      every test snippet, over C + 1 columns (background included)
  train acc    action acc on the training split: what the probe can fit
If aumn is no better than mil on a regime (and mil no better than linear), what a snippet
shows of its class is linearly separable there: unit-specific classifiers have no headroom on
it, and AUMN can only gain through the foreground attention or the MIL dynamics. If video is
far above linear, what tells the classes apart is the video around the snippet, not the snippet.

Deliberately doesn't: use temporal context (each snippet alone; the conv's 3-snippet window
would only add neighbours' evidence), or model weak supervision (the point is the ceiling).
"""
import sys
from typing import Any, Callable, Sequence

from absl import app
from absl import flags

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aumn_jax import cli
from aumn_jax import data
from benchmarks import robustness

PROBES = ('linear', 'mil', 'aumn', 'video')
MAX_PER_VIDEO = 300   # snippets kept per video (a deterministic random subset of longer ones)
BATCH = 512
LR = 1e-3
WEIGHT_DECAY = 5e-4   # the training config's L2 (configs/thumos.py optim.weight_decay)
TAU = 0.1             # the read attention's temperature (configs/thumos.py model.tau)

FLAGS = flags.FLAGS


def _layer_norm(x: np.ndarray) -> np.ndarray:
  return ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
          ).astype(np.float32)


def snippet_dataset(split: data.VideoSplit, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(x [N, F] float32 per-snippet LayerNorm of the features, y [N] int32: the class of the
  instance covering the snippet, C for background, context [N, F]: the mean of x over all of
  the snippet's video); snippets of two classes are left out."""
  xs, ys, contexts = [], [], []
  for i in range(len(split)):
    features = _layer_norm(np.asarray(split[i]['features'], np.float32))
    covered = split.snippet_classes(i, len(features))
    keep = np.flatnonzero(covered.sum(-1) <= 1)
    if len(keep) > MAX_PER_VIDEO:
      keep = np.sort(rng.choice(keep, MAX_PER_VIDEO, replace=False))
    xs.append(features[keep])
    ys.append(np.where(covered[keep].any(-1), covered[keep].argmax(-1), split.num_classes))
    contexts.append(np.broadcast_to(features.mean(0), (len(keep), features.shape[1])))
  return (np.concatenate(xs), np.concatenate(ys).astype(np.int32),
          np.concatenate(contexts).astype(np.float32))


def init_probe(kind: str, rng: jax.Array, num_features: int, num_columns: int, dim: int,
               units: int) -> dict[str, jax.Array]:
  """Parameters of one probe (lecun-normal weights, zero biases, zero unit classifiers)."""
  k_in, k_out, k_gate = jax.random.split(rng, 3)
  lecun = lambda k, shape: jax.random.normal(k, shape) / np.sqrt(shape[0])
  width = {'linear': num_features, 'video': 2 * num_features}.get(kind, dim)
  params = {'w': lecun(k_out, (width, num_columns)), 'b': jnp.zeros((num_columns,))}
  if kind in ('mil', 'aumn'):
    params.update(a=lecun(k_in, (num_features, dim)), c=jnp.zeros((dim,)))
  if kind == 'aumn':
    params.update(q=lecun(k_gate, (dim, units)), w_units=jnp.zeros((units, dim, num_columns)),
                  b_units=jnp.zeros((units, num_columns)))
  elif kind not in ('linear', 'mil', 'video'):
    raise ValueError(f'probe {kind!r}: not one of {PROBES}')
  return params


def probe_logits(params: dict[str, jax.Array], x_NxF: jax.Array, context_NxF: jax.Array
                 ) -> jax.Array:
  """[N, C + 1] logits of the probe whose parameters these are (init_probe); context_NxF
  (the video's mean input) is read by the 'video' probe only."""
  if 'a' not in params:
    if params['w'].shape[0] == 2 * x_NxF.shape[-1]:   # 'video'
      x_NxF = jnp.concatenate([x_NxF, context_NxF], axis=-1)
    return x_NxF @ params['w'] + params['b']
  z_NxD = jax.nn.relu(x_NxF @ params['a'] + params['c'])
  logits = z_NxD @ params['w'] + params['b']
  if 'q' in params:
    g_NxL = jax.nn.softmax(z_NxD @ params['q'] / TAU, axis=-1)
    units_NxC = (jnp.einsum('nl,nd,ldc->nc', g_NxL, z_NxD, params['w_units'])
                 + g_NxL @ params['b_units'])
    logits = logits + units_NxC
  return logits


def train_probe(kind: str, x: np.ndarray, y: np.ndarray, context: np.ndarray,
                num_columns: int, seed: int, steps: int, dim: int, units: int
                ) -> dict[str, jax.Array]:
  """Adam (lr LR, L2 WEIGHT_DECAY added to the gradient) on minibatches of BATCH snippets."""
  params = init_probe(kind, jax.random.PRNGKey(seed), x.shape[1], num_columns, dim, units)
  opt_state = _OPTIMIZER.init(params)
  order = np.random.default_rng(seed)
  for _ in range(steps):
    idx = order.integers(0, len(x), BATCH)
    params, opt_state = _train_step(params, opt_state, x[idx], y[idx], context[idx])
  return params


_OPTIMIZER = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.adam(LR))


@jax.jit  # one compilation per probe kind and data shape, shared by every seed
def _train_step(params, opt_state, xb, yb, cb):
  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(probe_logits(p, xb, cb), yb).mean()
  grads = jax.grad(loss_fn)(params)
  updates, opt_state = _OPTIMIZER.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


_logits = jax.jit(probe_logits)


def accuracies(params: dict[str, jax.Array], x: np.ndarray, y: np.ndarray,
               context: np.ndarray, num_classes: int) -> dict[str, float]:
  """action: argmax over the C action columns on action snippets; all: over C + 1 columns."""
  logits = np.concatenate([np.asarray(_logits(params, x[i:i + 8192], context[i:i + 8192]))
                           for i in range(0, len(x), 8192)])
  action = y < num_classes
  return {'action': float(np.mean(logits[action, :num_classes].argmax(-1) == y[action])),
          'all': float(np.mean(logits.argmax(-1) == y))}


def run_regime(regime: str, data_dir: str, seeds: Sequence[int], steps: int, dim: int,
               units: int, dataset: str = 'synthetic', log: Callable[[str], None] = print
               ) -> list[dict[str, Any]]:
  """Every probe and seed on one built dataset (its 'train' and 'test' splits): one row each."""
  splits = {name: data.load_split(data_dir, dataset, name) for name in ('train', 'test')}
  num_classes = splits['train'].num_classes
  sets = {name: snippet_dataset(split, np.random.default_rng(0))
          for name, split in splits.items()}
  rows = []
  for kind in PROBES:
    for seed in seeds:
      params = train_probe(kind, *sets['train'], num_classes + 1, seed, steps, dim, units)
      test = accuracies(params, *sets['test'], num_classes)
      train = accuracies(params, *sets['train'], num_classes)
      rows.append({'regime': regime, 'probe': kind, 'seed': seed, 'action_acc': test['action'],
                   'all_acc': test['all'], 'train_action_acc': train['action'],
                   'train_snippets': len(sets['train'][1]),
                   'test_snippets': len(sets['test'][1])})
      log(f'[snippet_probe] {regime} {kind} seed {seed}: action acc {100 * test["action"]:.1f}, '
          f'all {100 * test["all"]:.1f}, train action {100 * train["action"]:.1f}')
  return rows


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  out = []
  for key in dict.fromkeys((r['regime'], r['probe']) for r in rows):
    group = [r for r in rows if (r['regime'], r['probe']) == key]
    entry = {'regime': key[0], 'probe': key[1], 'seeds': [r['seed'] for r in group]}
    for metric in ('action_acc', 'all_acc', 'train_action_acc'):
      entry[metric] = robustness.mean_std([100 * r[metric] for r in group])
    out.append(entry)
  return out


def markdown(summary: Sequence[dict[str, Any]], command: str, note: str) -> str:
  lines = [note, '',
           '| regime | probe | test action acc | test all acc (C + 1) | train action acc |',
           '| --- | --- | --- | --- | --- |']
  for s in summary:
    cells = ' | '.join(f'{s[m][0]:.1f} ± {s[m][1]:.1f}'
                       for m in ('action_acc', 'all_acc', 'train_action_acc'))
    lines.append(f"| {s['regime']} | {s['probe']} | {cells} |")
  return '\n'.join(lines + ['', f'Command: `{command}`', ''])


def define_flags() -> None:
  flags.DEFINE_list('regimes', list(robustness.REGIMES), 'Subset of the battery.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Probe seeds (initialisation, minibatches).')
  flags.DEFINE_integer('data_seed', 1, 'Generator seed of every regime (1: validation).',
                       lower_bound=0)
  flags.DEFINE_integer('steps', 1500, 'Adam steps per probe.', lower_bound=1)
  flags.DEFINE_integer('dim', 256, 'D: the embedding width (configs/synthetic.py).')
  flags.DEFINE_integer('units', 16, 'L: the number of units (configs/synthetic.py).')
  flags.DEFINE_string('workdir', '/tmp/aumn_robustness', 'Where the regimes are built.')
  flags.DEFINE_string('data_dir', None, 'Probe this built dataset (its train and test splits) '
                      'instead of the battery\'s regimes.')
  flags.DEFINE_string('dataset', 'thumos14', 'The dataset name under --data_dir '
                      '(aumn_jax.data: thumos14, activitynet12, activitynet13, synthetic).')
  flags.DEFINE_string('json', None, 'Write every probe and the summary here.')
  flags.DEFINE_string('markdown', None, 'Write the markdown table here.')


@cli.user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  bad = [r for r in FLAGS.regimes if r not in robustness.REGIMES]
  if bad:
    raise app.UsageError(f'--regimes: unknown {bad}; known: {list(robustness.REGIMES)}')
  seeds = robustness.seed_list(FLAGS.seeds)
  cli.check_output_paths(json=FLAGS.json, markdown=FLAGS.markdown)
  rows = []
  if FLAGS.data_dir:   # a dataset built by data_prep.build, e.g. a real dump
    rows += run_regime(FLAGS.dataset, FLAGS.data_dir, seeds, FLAGS.steps, FLAGS.dim,
                       FLAGS.units, FLAGS.dataset)
    source = f'{FLAGS.dataset} at {FLAGS.data_dir}'
  else:
    for regime in FLAGS.regimes:
      data_dir = robustness.prepare_regime(regime, FLAGS.data_seed, FLAGS.workdir)
      rows += run_regime(regime, data_dir, seeds, FLAGS.steps, FLAGS.dim, FLAGS.units)
    source = f'data seed {FLAGS.data_seed}'
  summary = summarize(rows)
  command = 'python benchmarks/snippet_probe.py ' + ' '.join(sys.argv[1:])
  note = (f'Fully supervised snippet probes, {FLAGS.steps} steps of {BATCH} snippets, D '
          f'{FLAGS.dim}, L {FLAGS.units}, {source}, probe seeds {seeds}; '
          'accuracy in %, mean ± sample std over probe seeds.')
  table = markdown(summary, command, note)
  print(table)
  robustness.write_outputs(FLAGS.json, FLAGS.markdown, table,
                           {'command': command, 'runs': rows, 'summary': summary})


if __name__ == '__main__':
  define_flags()
  cli.run(main)
