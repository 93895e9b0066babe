"""Train state, its creation, and the pure train / eval steps.

`train_step(state, batch, rng, *, config)` is a pure function: the same inputs give the same
outputs, the rng is an argument folded with the step, and nothing talks to the host. The
memory bank (and, with model.fg_norm='batch', the attention input's running mean) is a second
variable collection carried in the state (like `batch_stats`): the model's apply moves it when
`mutable=['memory']`, the optimizer never sees it.

Several seeds are one program (config.num_seeds): `init_state` and `jit_steps` vmap these
single-run functions over a leading seed axis of the state, the batch and the rng, so replica i
computes what a run with seed `config.seed + i` computes (its init, its dropout stream, and,
fed by input_pipeline.TrainIterator(num_seeds=N), its data order). Research tweaks edit the
single-run functions; the seed axis never appears in them.

How the batch is split over devices lives in parallel.py (`jit_steps` only binds its
shardings); files live in checkpointing.py.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from aumn_jax import losses
from aumn_jax import models
from aumn_jax import parallel


# What each step reads of a host batch (the rest, e.g. the video 'index', stays on the host).
TRAIN_INPUTS = ('features', 'mask', 'labels')
EVAL_INPUTS = ('features', 'mask')


class TrainState(train_state.TrainState):
  memory: Any  # `memory` collection (the bank; fg_norm='batch''s running mean, for mil too;
  # {} for mil with another fg_norm): moved by the model, not the optimizer


def learning_rate(optim_cfg: ml_collections.ConfigDict) -> optax.ScalarOrSchedule:
  """optim.learning_rate, constant (SPEC §4); with optim.cosine_steps > 0 it decays along a
  cosine to 0 over that many steps and stays 0 after (a run of exactly that many steps ends
  with a learning rate of ~0). The horizon is its own field, not num_train_steps, so extending a
  resumed run does not bend the schedule behind it."""
  if optim_cfg.cosine_steps > 0:
    return optax.cosine_decay_schedule(optim_cfg.learning_rate, optim_cfg.cosine_steps)
  return optim_cfg.learning_rate


def make_optimizer(optim_cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  # Adam with classic L2 weight decay (SPEC §4, PyTorch's Adam(weight_decay=...)): the decay is
  # added to the gradient before Adam's normalisation, not decoupled as in AdamW.
  return optax.chain(
      optax.add_decayed_weights(optim_cfg.weight_decay),
      optax.adam(learning_rate(optim_cfg)))


def create_train_state(config: ml_collections.ConfigDict, num_classes: int,
                       rng: jax.Array) -> TrainState:
  """Initial state; jit this with out_shardings to have it born placed on the mesh."""
  model = models.create_model(config, num_classes)
  x = jnp.zeros((1, config.data.max_snippets, config.data.feature_dim), jnp.float32)
  mask = jnp.ones((1, config.data.max_snippets), jnp.float32)
  params_rng, dropout_rng = jax.random.split(rng)
  variables = model.init({'params': params_rng, 'dropout': dropout_rng}, x, mask, train=False)
  return TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      memory=variables.get('memory', {}), tx=make_optimizer(config.optim))


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               config: ml_collections.ConfigDict) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on a (global) batch. Returns the new state and scalar metrics."""
  rng = jax.random.fold_in(rng, state.step)  # a resumed run replays the same stream

  def loss_fn(params):
    out, new_vars = state.apply_fn(
        {'params': params, 'memory': state.memory}, batch['features'], batch['mask'],
        train=True, rngs={'dropout': rng}, mutable=['memory'])
    loss, aux = losses.total_loss(out, batch, config.loss, state.step)
    return loss, (aux, new_vars.get('memory', {}))

  (loss, (aux, memory)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  new_state = state.apply_gradients(grads=grads, memory=memory)
  metrics = {'loss': loss, **aux, 'grad_norm': optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]
              ) -> dict[str, dict[str, jax.Array]]:
  """Outputs for localization and plots: stored bank, no update, fixed shapes + mask.

  {'per_snippet': {name: [B, T, ...]}, 'per_video': {name: [B, ...]}}: where an output sits
  says how it is cut to a video (eval_loop.predict), so a new output cannot be cut wrong.
  """
  out = state.apply_fn({'params': state.params, 'memory': state.memory},
                       batch['features'], batch['mask'], train=False)
  per_snippet = {
      'cas_probs': jax.nn.softmax(out.cas_supp, axis=-1),   # SPEC §5: suppressed branch
      'fg': out.fg,
  }
  if out.memory is not None:
    per_snippet['read_attn'] = out.memory.read_attn
  per_video = {'video_probs': jax.nn.softmax(out.video_logits_supp, axis=-1)}
  return {'per_snippet': per_snippet, 'per_video': per_video}


def seeds(config: ml_collections.ConfigDict) -> list[int]:
  """The run seeds of the replicas: config.seed, config.seed + 1, ... (config.num_seeds)."""
  return [config.seed + i for i in range(config.num_seeds)]


def jit_steps(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """The jitted, sharded train and eval steps over all seeds (one compilation per shape).

  train(state [N], batch [N, B, ...], rngs [N]) -> (state [N], metrics {name: [N]});
  evaluate(state [N], batch [B, ...]) -> eval_step's outputs with a leading [N] (every seed
  sees the same evaluation batch).
  """
  seeded = parallel.seed_sharded(mesh)
  train = jax.jit(jax.vmap(functools.partial(train_step, config=config)), donate_argnums=0,
                  in_shardings=(seeded, parallel.seed_batch_sharded(mesh), seeded),
                  out_shardings=(seeded, seeded))
  evaluate = jax.jit(jax.vmap(eval_step, in_axes=(0, None)),
                     in_shardings=(seeded, parallel.batch_sharded(mesh)),
                     out_shardings=parallel.seed_batch_sharded(mesh))
  return train, evaluate


def init_state(config: ml_collections.ConfigDict, num_classes: int,
               mesh: jax.sharding.Mesh) -> TrainState:
  """The initial states of all seeds, stacked [N, ...] and split over the mesh's `seed` axis
  (the same on every process: each replica's rng is PRNGKey(its seed))."""
  rngs = jnp.stack([jax.random.PRNGKey(s) for s in seeds(config)])
  init = jax.jit(jax.vmap(functools.partial(create_train_state, config, num_classes)),
                 out_shardings=parallel.seed_sharded(mesh))
  return init(rngs)


def dropout_rngs(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> jax.Array:
  """[N] dropout streams, one per seed (train_step folds in the step; init used stream 0)."""
  streams = lambda: jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1)
                               for s in seeds(config)])
  return jax.jit(streams, out_shardings=parallel.seed_sharded(mesh))()  # multi-process too


def replica(tree: Any, index: int) -> Any:
  """Replica `index` of a seed-stacked tree (a state, metrics, outputs), as host values."""
  return jax.tree.map(lambda x: x[index], jax.device_get(tree))

