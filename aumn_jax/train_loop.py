"""train_and_evaluate: wiring and cadence of a run (log / evaluate / checkpoint / resume).

Life of a step: input_pipeline (host NumPy rows of this process) -> parallel.to_global
(one global, batch-sharded jax.Array) -> train_step (jitted once, donates the state) ->
metrics kept on device and fetched every `log_every_steps`. Every `eval_every_steps` the
test split goes through eval_step (a few bucketed shapes) -> localization -> evaluation.

Rerunning the same command resumes from the latest checkpoint: the data order and the rng
are functions of (seed, step), so the resumed run is the uninterrupted one. A non-finite loss
stops the run naming its step before anything non-finite is checkpointed; SIGTERM saves a
checkpoint at the current step and returns cleanly.

Model math lives in models.py / losses.py, the step in train_step.py, devices in parallel.py.
"""
import json
import os
import signal
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import tqdm

from aumn_jax import checkpointing
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import evaluation
from aumn_jax import input_pipeline
from aumn_jax import localization
from aumn_jax import losses
from aumn_jax import metric_writer
from aumn_jax import models
from aumn_jax import parallel
from aumn_jax import plotting
from aumn_jax import train_step as train_step_lib

HEADS = ('aumn', 'mil')
SAMPLINGS = ('random_crop', 'uniform')


def validate_config(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """Catches the config values that would otherwise fail deep inside jit with a traceback."""
  checks = [
      (config.model.head in HEADS, f'config.model.head={config.model.head!r}: not one of {HEADS}'),
      (config.data.sampling in SAMPLINGS,
       f'config.data.sampling={config.data.sampling!r}: not one of {SAMPLINGS}'),
      (config.batch_size > 0, f'config.batch_size={config.batch_size}: must be > 0'),
      (config.num_train_steps >= 0, 'config.num_train_steps must be >= 0'),
      (config.data.max_snippets > 0, 'config.data.max_snippets must be > 0'),
      (min(config.log_every_steps, config.eval_every_steps, config.checkpoint_every_steps) > 0,
       'config.{log,eval,checkpoint}_every_steps must be > 0'),
      (config.model.tau > 0 and config.model.tau_u > 0, 'config.model.tau/tau_u must be > 0'),
      (0.0 <= config.model.dropout < 1.0, 'config.model.dropout must be in [0, 1)'),
      (config.loss.guide_classes in losses.GUIDE_CLASSES,
       f'config.loss.guide_classes={config.loss.guide_classes!r}: not one of '
       f'{losses.GUIDE_CLASSES}'),
      (config.loss.guide_form in losses.GUIDE_FORMS,
       f'config.loss.guide_form={config.loss.guide_form!r}: not one of {losses.GUIDE_FORMS}'),
      (config.loss.guide_steps >= 0, 'config.loss.guide_steps must be >= 0'),
  ]
  for key, known in (('input_norm', models.INPUT_NORMS), ('fg_input', models.FG_INPUTS),
                     ('fg_norm', models.FG_NORMS)):
    value = config.model[key]
    checks.append((value in known, f'config.model.{key}={value!r}: not one of {known}'))
  for ok, message in checks:
    if not ok:
      raise errors.TrainingError(message)
  for what in ('batch_size', 'data.eval_batch_size'):
    value = config.batch_size if what == 'batch_size' else config.data.eval_batch_size
    try:
      parallel.check_batch_size(value, mesh, what)
    except ValueError as e:
      raise errors.TrainingError(str(e)) from None
  # Settings first used at the first evaluation: checked now, not eval_every_steps later.
  try:
    localization.check_config(config.localization)
    input_pipeline.check_buckets(config.data.eval_buckets)
    evaluation.check_thresholds(config.evaluation.tiou_thresholds)
  except ValueError as e:  # evaluation.InputError is a ValueError
    raise errors.TrainingError(f'config: {e}') from None


def predict(eval_fn, state, split, config: ml_collections.ConfigDict,
            mesh: jax.sharding.Mesh) -> dict[str, dict[str, np.ndarray]]:
  """Runs eval_step over a whole split: {video_id: per-video outputs cut to its length}."""
  outputs = {}
  for host_batch in input_pipeline.eval_batches(
      split, batch_size=config.data.eval_batch_size, buckets=config.data.eval_buckets,
      process_index=jax.process_index(), process_count=jax.process_count()):
    index = parallel.to_host(parallel.to_global(host_batch['index'], mesh))
    inputs = {k: host_batch[k] for k in ('features', 'mask')}
    result = parallel.to_host(eval_fn(state, parallel.to_global(inputs, mesh)))
    for row, video_index in enumerate(index):
      if video_index < 0:
        continue
      length = int(split.lengths[video_index])
      outputs[split.video_ids[video_index]] = {
          key: (value[row, :length] if value.ndim >= 3 or key == 'fg' else value[row])
          for key, value in result.items()}
  return outputs


def localize_and_evaluate(outputs, split, config: ml_collections.ConfigDict):
  """Model outputs of a split -> (ActivityNet results dict, evaluation.Evaluation).

  Predicted labels without ground truth in the evaluated split are dropped and counted
  (`num_unknown_dropped`): the ActivityNet code would crash on them, and a small test split
  need not cover every class.
  """
  videos = []
  for i, video_id in enumerate(split.video_ids):
    meta = split.meta(i)
    out = outputs[video_id]
    scores = localization.snippet_scores(out['cas_probs'], out['fg'],
                                         config.localization.score)
    videos.append((video_id, scores, out['video_probs'], meta['fps'],
                   meta['snippet_stride'], meta['duration']))
  results = localization.localize(videos, config.localization, split.class_names)
  ground_truth = evaluation.load_ground_truth(
      data.ground_truth(split, config.data.eval_split), subset=config.data.eval_split)
  scored = evaluation.compute(ground_truth, evaluation.validate_results(results),
                              config.evaluation.tiou_thresholds, drop_unknown_labels=True)
  return results, scored


def protocol_for(tiou_thresholds) -> Optional[evaluation.Protocol]:
  """The benchmark protocol whose thresholds these are (for the table's averages), if any."""
  for protocol in evaluation.PROTOCOLS.values():
    if np.allclose(protocol.tiou_thresholds, tiou_thresholds):
      return protocol
  return None


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps (all processes agree on it)."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. a test runner's worker): no handler
      self._previous = None
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def should_stop(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested))))

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _fetch_checked(pending: list[tuple[int, Any]]) -> list[tuple[int, dict[str, float]]]:
  """Device metrics -> floats; raises naming the first step whose loss is not finite."""
  fetched = jax.device_get(pending)
  rows = []
  for step, metrics in fetched:
    metrics = {k: float(v) for k, v in metrics.items()}
    # The loss is computed before the update: a finite loss with non-finite gradients still
    # writes NaN into the params, so both are checked before anything is checkpointed.
    for key in ('loss', 'grad_norm'):
      if not np.isfinite(metrics[key]):
        raise errors.TrainingError(
            f'non-finite {key} ({metrics[key]}) at step {step}; stopped without saving it '
            '(the last good checkpoint is kept)')
    rows.append((step, metrics))
  return rows


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: Optional[jax.sharding.Mesh] = None) -> dict[str, Any]:
  """Trains (resuming if `workdir` has a checkpoint), evaluates, writes the final results.

  `mesh` defaults to every device of every process (tests pass smaller ones).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  mesh = parallel.make_mesh() if mesh is None else mesh
  validate_config(config, mesh)
  data_dir = config.data.data_dir  # built beforehand: data_prep.build.prepare_data_dir
  train_split = data.load_split(data_dir, config.data.dataset, config.data.train_split)
  eval_split = data.load_split(data_dir, config.data.dataset, config.data.eval_split)
  if train_split.class_names != eval_split.class_names:
    raise errors.TrainingError(f'{data_dir}: train and eval splits have different class lists')

  _check_same_run(config, workdir)  # before anything in W is written
  state = train_step_lib.init_state(config, train_split.num_classes, mesh)
  manager = checkpointing.create_manager(workdir)
  start_step = manager.latest_step() or 0
  writer = metric_writer.MetricWriter(workdir, resume_step=start_step)
  writer.write_config(config)
  if start_step:
    state = checkpointing.restore(manager, start_step, state)
    print(f'Resumed from {workdir}/checkpoints at step {start_step}', flush=True)
  train_fn, eval_fn = train_step_lib.jit_steps(config, mesh)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)  # dropout stream (init used 0)

  def evaluate_now(step):
    outputs = predict(eval_fn, state, eval_split, config, mesh)
    results, scored = localize_and_evaluate(outputs, eval_split, config)
    metrics = scored.to_dict()
    writer.write(step, {k: metrics[k] for k in ('map', 'average_map', 'tiou_thresholds')},
                 prefix='eval/')
    return step, outputs, results, scored

  iterator = input_pipeline.TrainIterator(
      train_split, start_step, seed=config.seed, global_batch_size=config.batch_size,
      max_snippets=config.data.max_snippets, sampling=config.data.sampling,
      process_index=jax.process_index(), process_count=jax.process_count(),
      end_step=config.num_train_steps)
  pending: list[tuple[int, Any]] = []
  progress = tqdm.tqdm(total=config.num_train_steps, initial=start_step, unit='step',
                       disable=jax.process_index() != 0, dynamic_ncols=True)
  step = start_step
  last_eval = None  # (step, outputs, results, Evaluation) of the latest evaluation
  last_log_time, last_log_step = time.perf_counter(), start_step
  try:
    with _Preemption() as preemption:
      while step < config.num_train_steps:
        _, host_batch = next(iterator)
        state, metrics = train_fn(state, parallel.to_global(host_batch, mesh), rng)
        step += 1
        pending.append((step, metrics))
        progress.update(1)
        last = step == config.num_train_steps
        stop = preemption.should_stop()
        # On SIGTERM the grace period goes to the save, not to an evaluation the rerun redoes.
        eval_now = (step % config.eval_every_steps == 0 or last) and not stop
        save_now = step % config.checkpoint_every_steps == 0 or eval_now or stop
        if step % config.log_every_steps == 0 or save_now:
          rows = _fetch_checked(pending)
          pending = []
          now = time.perf_counter()
          steps_per_sec = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          mean = {k: float(np.mean([m[k] for _, m in rows])) for k in rows[-1][1]}
          writer.write(step, {**mean, 'steps_per_sec': steps_per_sec}, prefix='train/')
          progress.set_postfix(loss=f'{mean["loss"]:.4f}')
        if eval_now:
          last_eval = evaluate_now(step)
          progress.write(f'step {step}: average mAP {100 * last_eval[3].average_map:.2f}')
        if save_now:
          checkpointing.save(manager, step, state, metrics=(
              {checkpointing.BEST_METRIC: last_eval[3].average_map} if eval_now else None))
        if stop and not last:
          manager.wait_until_finished()
          progress.write(f'SIGTERM: saved a checkpoint at step {step}; rerun to resume')
          return {'step': step, 'preempted': True}
    if last_eval is None or last_eval[0] != step:  # rerun of a finished run: nothing trained
      last_eval = evaluate_now(step)
    _, outputs, results, scored = last_eval
    manager.wait_until_finished()  # the best step's metrics are readable once its save is done
    best = manager.best_step()
    best_map = manager.metrics(best)[checkpointing.BEST_METRIC] if best is not None else None
    if jax.process_index() == 0:
      plotting.plot_videos(os.path.join(workdir, 'plots'), outputs, eval_split, results,
                           config.evaluation.num_plots)
      if config.model.head == 'aumn':
        usage, counts = plotting.class_unit_usage(outputs, eval_split)
        plotting.plot_class_unit_usage(os.path.join(workdir, 'plots', 'class_unit_usage.png'),
                                       usage, counts, eval_split.class_names)
        evaluation.write_json(os.path.join(workdir, 'plots', 'class_unit_usage.json'), {
            'rows': eval_split.class_names + ['background'], 'snippets': counts.tolist(),
            'usage': usage.tolist()})
    return write_results(config, workdir, step, results, scored,
                         best=(best, best_map), label='final')
  finally:
    progress.close()
    iterator.close()
    manager.wait_until_finished()
    writer.close()


def write_results(config, workdir, step, results, scored, *, best=(None, None),
                  label='final') -> dict[str, Any]:
  """proposals_<split>.json, results.json and the printed table for one evaluated checkpoint.

  `best` = (step, average mAP) of the best-by-test checkpoint, reported beside the headline
  (final) numbers and labelled as the optimistic choice it is.
  """
  summary = {**scored.to_dict(), 'step': int(step)}
  if best[0] is not None:
    summary['best_by_test_map'] = {
        'step': int(best[0]), 'average_map': float(best[1]),
        'note': 'checkpoint selected by test mAP: optimistic, not the headline number'}
  if jax.process_index() == 0:
    split_name = config.data.eval_split
    evaluation.write_proposals(os.path.join(workdir, f'proposals_{split_name}.json'), results)
    evaluation.write_json(os.path.join(workdir, 'results.json'), summary)
    print(evaluation.format_table(
        scored, protocol=protocol_for(scored.tiou_thresholds),
        ground_truth_name=f'{config.data.dataset}/{split_name}',
        proposals_name=f'step {step} ({label})'), flush=True)
    if best[0] is not None:
      print(f'best-by-test-mAP checkpoint (optimistic): step {best[0]}, '
            f'average mAP {100 * best[1]:.2f}', flush=True)
  return summary


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, *,
                        step: Optional[int] = None, best: bool = False) -> dict[str, Any]:
  """Restores a checkpoint of `workdir`, localizes the eval split, writes and prints the table.

  The latest checkpoint by default (`step` picks another, `best` the best-by-test one, labelled
  optimistic). Outputs go to W/eval_step_<N>/ (proposals_<split>.json, results.json) so the
  run's own final results are never overwritten; the numbers equal the in-training evaluation
  of that checkpoint (same eval step, same localization, same evaluator).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  _check_same_run(config, workdir)
  mesh = parallel.make_mesh()
  validate_config(config, mesh)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise errors.TrainingError(f'{workdir}: no checkpoints/ directory (train there first)')
  manager = checkpointing.create_manager(workdir, read_only=True)
  if best:
    step, label = manager.best_step(), 'best by test mAP: optimistic'
    if step is None:
      raise errors.TrainingError(f'{workdir}/checkpoints: no evaluated checkpoint to call best')
  elif step is None:
    step, label = manager.latest_step(), 'latest'
  else:
    label = 'requested'
  if step is None or step not in manager.all_steps():
    raise errors.TrainingError(f'{workdir}/checkpoints: no checkpoint at step {step}; '
                        f'available: {list(manager.all_steps())}')
  data_dir = config.data.data_dir
  eval_split = data.load_split(data_dir, config.data.dataset, config.data.eval_split)
  state = checkpointing.restore(
      manager, step, train_step_lib.init_state(config, eval_split.num_classes, mesh))
  _, eval_fn = train_step_lib.jit_steps(config, mesh)
  outputs = predict(eval_fn, state, eval_split, config, mesh)
  results, scored = localize_and_evaluate(outputs, eval_split, config)
  out_dir = os.path.join(workdir, f'eval_step_{step}')
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
  return write_results(config, out_dir, step, results, scored, label=label)


def _check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Fails in one line when the config's model/data differ from the run's W/config.json."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  if saved['data'].get('feature_dim') != current['data']['feature_dim']:
    raise errors.TrainingError(
        f'{path}: the run used data.feature_dim={saved["data"].get("feature_dim")}')
  for group in ('model', 'memory'):
    for key, value in saved.get(group, {}).items():
      if current[group].get(key) != value:
        raise errors.TrainingError(
            f'{path}: the run used {group}.{key}={value!r}, this config has '
            f'{current[group].get(key)!r}: use the run\'s config and overrides (or a new workdir)')
  if saved['data']['dataset'] != current['data']['dataset']:
    raise errors.TrainingError(f'{path}: the run used data.dataset={saved["data"]["dataset"]!r}')
