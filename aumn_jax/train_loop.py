"""train_and_evaluate: wiring and cadence of a run (log / evaluate / checkpoint / resume).

Life of a step: input_pipeline (host NumPy rows of this process) -> parallel.to_global
(one global, batch-sharded jax.Array) -> train_step (jitted once, donates the state) ->
metrics kept on device and fetched every `log_every_steps`. Every `eval_every_steps` the
test split goes through eval_step (a few bucketed shapes) -> localization -> evaluation.

`config.num_seeds` = N trains N independent runs (seeds config.seed .. config.seed + N - 1) as
one program: the state, batch, rng and metrics carry a leading seed axis (train_step.py), every
evaluation scores each seed, and the logs, results.json and the table report each seed and the
mean ± std over them (eval_loop.py).

Rerunning the same command resumes from the latest checkpoint: the data order and the rng
are functions of (seed, step), so the resumed run is the uninterrupted one. A non-finite loss
stops the run naming its step before anything non-finite is checkpointed; SIGTERM and Ctrl-C
save a checkpoint at the current step and return (train.py then exits 0 on SIGTERM, 130 on
Ctrl-C).

One run per workdir: process 0 holds W/.lock (an flock, dropped with the process) for the whole
run, and a second run on the same workdir stops at once with one line.

Model math lives in models.py / losses.py, the step in train_step.py, devices in parallel.py,
evaluation (predict -> localize -> evaluate -> write) in eval_loop.py, config checks in
config_checks.py.
"""
import os
import signal
import time
from typing import Any, NamedTuple, Optional

import jax
import ml_collections
import numpy as np
import tqdm

from aumn_jax import checkpointing
from aumn_jax import config_checks
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import eval_loop
from aumn_jax import evaluation
from aumn_jax import files
from aumn_jax import formats
from aumn_jax import input_pipeline
from aumn_jax import metric_writer
from aumn_jax import parallel
from aumn_jax import plotting
from aumn_jax import train_step as train_step_lib

LOCK_FILE = '.lock'  # W/.lock: held by process 0 for the whole run


class _Evaluated(NamedTuple):
  """One evaluation of the run, one entry per seed: per-video model outputs, the localized
  results, their mAP, the attention's AUC; `summary`: eval_loop.summarize of the seeds."""
  step: int
  outputs: list[dict[str, dict[str, np.ndarray]]]
  results: list[dict[str, list[dict[str, Any]]]]
  scored: list[evaluation.Evaluation]
  fg_aucs: list[Optional[float]]
  summary: dict[str, Any]


class _Preemption:
  """Turns SIGTERM and Ctrl-C (SIGINT) into a flag the loop checks between steps.

  All processes agree on it. One process: our handlers. Several: SIGTERM (a scheduler's
  preemption notice, to any one process) goes to JAX's preemption service, which the
  distributed runtime sets up and which picks the step all processes stop at
  (multihost_utils.reached_preemption_sync_point, a local check every step); Ctrl-C is ours,
  agreed on by an allgather every `every` steps. A second Ctrl-C is not caught: it
  interrupts at once.
  """

  def __init__(self):
    self.requested = None  # the name of the first signal received
    self._previous = {}

  def __enter__(self):
    signals = [signal.SIGINT]
    if jax.process_count() == 1:
      signals.append(signal.SIGTERM)
    for signum in signals:
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # not the main thread (e.g. a test runner's worker): no handler
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = self.requested or signal.Signals(signum).name
    if signum == signal.SIGINT:  # the next Ctrl-C interrupts without waiting for the save
      signal.signal(signal.SIGINT, signal.default_int_handler)

  def should_stop(self, step: int, every: int) -> bool:
    """Call at every step. Single process: at once. Several: SIGTERM at the step JAX's
    preemption service agreed on; Ctrl-C every `every` steps, when the processes agree over
    one allgather (a blocking collective, so not every step)."""
    if jax.process_count() == 1:
      return self.requested is not None
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    if multihost_utils.reached_preemption_sync_point(step):
      self.requested = self.requested or 'SIGTERM'
      return True
    if step % every:
      return False
    return bool(np.any(multihost_utils.process_allgather(np.array(self.requested is not None))))

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


class _Profiler:
  """A jax.profiler trace of the training steps [start, end) into `log_dir` (TensorBoard's
  profile plugin or Perfetto read it); start == end: off. Evaluations inside the window are
  traced too."""

  def __init__(self, log_dir: str, start: int, end: int):
    self.log_dir, self.start, self.end = log_dir, start, end
    self.tracing = self.done = False

  def before(self, step: int) -> None:
    if not (self.tracing or self.done) and self.start <= step < self.end:  # a resume inside too
      jax.profiler.start_trace(self.log_dir)
      self.tracing = True

  def after(self, step: int, state: Any) -> None:
    if self.tracing and step >= self.end:
      jax.block_until_ready(state)  # the traced steps' device work ends inside the trace
      self.stop()

  def stop(self) -> None:
    if self.tracing:
      self.tracing, self.done = False, True
      jax.profiler.stop_trace()


def _fetch_checked(pending: list[tuple[int, Any]], seeds: list[int]
                   ) -> list[tuple[int, dict[str, np.ndarray]]]:
  """Device metrics -> float64 [N] per key; raises naming the first step (and seed) whose loss
  is not finite."""
  fetched = jax.device_get(pending)
  rows = []
  for step, metrics in fetched:
    metrics = {k: np.asarray(v, np.float64).reshape(len(seeds)) for k, v in metrics.items()}
    # The loss is computed before the update: a finite loss with non-finite gradients still
    # writes NaN into the params, so both are checked before anything is checkpointed.
    for key in ('loss', 'grad_norm'):
      bad = np.flatnonzero(~np.isfinite(metrics[key]))
      if bad.size:
        which = f' of seed {seeds[bad[0]]}' if len(seeds) > 1 else ''
        raise errors.TrainingError(
            f'non-finite {key} ({metrics[key][bad[0]]}) at step {step}{which}; stopped '
            'without saving it (the last good checkpoint is kept)')
    rows.append((step, metrics))
  return rows


def _train_line(rows: list[tuple[int, dict[str, np.ndarray]]], seeds: list[int]
                ) -> dict[str, Any]:
  """The logged means of `rows` (the steps since the last log): one value per key, the mean
  over seeds; with several seeds also `per_seed` [{seed, key: value, ...}]."""
  mean = {k: np.mean([m[k] for _, m in rows], axis=0) for k in rows[-1][1]}  # [N] per key
  line: dict[str, Any] = {k: float(np.mean(v)) for k, v in mean.items()}
  if len(seeds) > 1:
    line['per_seed'] = [{'seed': s, **{k: float(v[i]) for k, v in mean.items()}}
                        for i, s in enumerate(seeds)]
  return line


def _plot(out_dir, outputs, results, split, config) -> None:
  """OUT/plots: CAS plots of a few test videos and, for AUMN, the class x unit usage."""
  plots = os.path.join(out_dir, 'plots')
  plotting.plot_videos(plots, outputs, split, results, config.evaluation.num_plots)
  if config.model.head == 'aumn':
    usage, counts = plotting.class_unit_usage(outputs, split)
    plotting.plot_class_unit_usage(os.path.join(plots, 'class_unit_usage.png'),
                                   usage, counts, split.class_names)
    formats.write_json(os.path.join(plots, 'class_unit_usage.json'), {
        'rows': split.class_names + ['background'], 'snippets': counts.tolist(),
        'usage': usage.tolist()})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: Optional[jax.sharding.Mesh] = None) -> dict[str, Any]:
  """Trains (resuming if `workdir` has a checkpoint), evaluates, writes the final results.

  `mesh` defaults to every device of every process (tests pass smaller ones).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  mesh = parallel.make_mesh(num_seeds=config.num_seeds) if mesh is None else mesh
  config_checks.validate_config(config, mesh)
  config_checks.check_workdir(workdir)
  data_dir = config.data.data_dir  # built beforehand: data_prep.build.prepare_data_dir
  train_split = data.load_split(data_dir, config.data.dataset, config.data.train_split)
  eval_split = data.load_split(data_dir, config.data.dataset, config.data.eval_split)
  if train_split.class_names != eval_split.class_names:
    raise errors.TrainingError(f'{data_dir}: train and eval splits have different class lists')

  if jax.process_index() != 0:  # one lock per run: process 0 holds it for all processes
    return _train(config, workdir, mesh, train_split, eval_split)
  os.makedirs(workdir, exist_ok=True)
  try:
    with files.exclusive_lock(os.path.join(workdir, LOCK_FILE)):
      return _train(config, workdir, mesh, train_split, eval_split)
  except BlockingIOError:
    raise errors.TrainingError(
        f'{workdir}: another run is using this workdir (it holds {LOCK_FILE}); wait for it to '
        'finish or use another --workdir') from None


def _train(config, workdir, mesh, train_split, eval_split) -> dict[str, Any]:
  """train_and_evaluate's loop, run under the workdir lock."""
  changed = config_checks.check_same_run(config, workdir)  # before anything in W is written
  state = train_step_lib.init_state(config, train_split.num_classes, mesh)
  log = lambda line: print(line, flush=True)
  manager = checkpointing.create_manager(workdir, log=log)
  start_step, state = checkpointing.restore_latest(manager, state, log=log)
  writer = metric_writer.MetricWriter(workdir, resume_step=start_step)
  try:
    writer.write_config(config)  # only allowed changes reach it; their history: resumes.jsonl
    if start_step:
      writer.write_resume(start_step, changed)
  except BaseException:
    writer.close()
    raise
  if start_step:
    print(f'Resumed from {workdir}/checkpoints at step {start_step}'
          + (f' (changed: {", ".join(changed)})' if changed else ''), flush=True)
  train_fn, eval_fn = train_step_lib.jit_steps(config, mesh)
  rngs = train_step_lib.dropout_rngs(config, mesh)  # [N] dropout streams
  seeds = train_step_lib.seeds(config)

  def evaluate_now(step, log=True):
    outputs = eval_loop.predict(eval_fn, state, eval_split, config, mesh)
    localized = [eval_loop.localize_and_evaluate(o, eval_split, config) for o in outputs]
    scored = [e for _, e in localized]
    fg_aucs = [eval_loop.attention_auc(o, eval_split) for o in outputs]
    summary = eval_loop.summarize(scored, seeds, fg_aucs)
    if log:
      writer.write(step, {k: v for k, v in summary.items() if k not in eval_loop.PER_RUN_KEYS},
                   prefix='eval/')
    return _Evaluated(step, outputs, [r for r, _ in localized], scored, fg_aucs, summary)

  iterator = input_pipeline.TrainIterator(
      train_split, start_step, seed=config.seed, global_batch_size=config.batch_size,
      max_snippets=config.data.max_snippets, sampling=config.data.sampling,
      process_index=jax.process_index(), process_count=jax.process_count(),
      end_step=config.num_train_steps, num_seeds=config.num_seeds)
  pending: list[tuple[int, Any]] = []
  progress = tqdm.tqdm(total=config.num_train_steps, initial=start_step, unit='step',
                       disable=jax.process_index() != 0, dynamic_ncols=True)
  step = start_step
  last_eval: Optional[_Evaluated] = None  # the latest evaluation
  last_log_time, last_log_step = time.perf_counter(), start_step
  profiler = _Profiler(os.path.join(workdir, 'profile'), *config.profile_steps)
  try:
    with _Preemption() as preemption:
      while step < config.num_train_steps:
        _, host_batch = next(iterator)
        inputs = {k: host_batch[k] for k in train_step_lib.TRAIN_INPUTS}  # not the 'index'
        profiler.before(step)
        state, metrics = train_fn(
            state, parallel.to_global(inputs, parallel.seed_batch_sharded(mesh)), rngs)
        step += 1
        profiler.after(step, state)
        pending.append((step, metrics))
        progress.update(1)
        last = step == config.num_train_steps
        stop = preemption.should_stop(step, config.log_every_steps)
        # On SIGTERM the grace period goes to the save, not to an evaluation the rerun redoes.
        eval_now = (step % config.eval_every_steps == 0 or last) and not stop
        save_now = step % config.checkpoint_every_steps == 0 or eval_now or stop
        if step % config.log_every_steps == 0 or save_now:
          line = _train_line(_fetch_checked(pending, seeds), seeds)
          pending = []
          now = time.perf_counter()
          steps_per_sec = (step - last_log_step) / max(now - last_log_time, 1e-9)
          last_log_time, last_log_step = now, step
          # Evaluation time is left out (the clock restarts after each evaluation); a step
          # trains every seed, so seed-steps/s is steps/s times num_seeds.
          writer.write(step, {**line, 'steps_per_sec': steps_per_sec,
                              'videos_per_sec': steps_per_sec * config.batch_size * len(seeds)},
                       prefix='train/')
          progress.set_postfix(loss=f'{line["loss"]:.4f}')
          checkpointing.check_saves(manager)  # a failed background save stops the run here
        if eval_now:
          progress.set_description_str('evaluating', refresh=True)
          last_eval = evaluate_now(step)
          progress.write(f'step {step}: average mAP '
                         f'{eval_loop.format_average(last_eval.summary)}, AUC(a) '
                         f'{eval_loop.format_auc(last_eval.summary)}')
          progress.set_description_str('', refresh=False)
          progress.unpause()  # the ETA and steps/s leave the evaluation's time out
          last_log_time = time.perf_counter()
        if save_now:
          checkpointing.save(manager, step, state, metrics=(
              {checkpointing.BEST_METRIC: last_eval.summary['average_map']} if eval_now else None))
        if stop and not last:
          checkpointing.wait_for_saves(manager)
          name = preemption.requested or 'SIGTERM'  # (another process's signal)
          progress.write(f'{name}: saved a checkpoint at step {step}; rerun to resume')
          return {'step': step, 'preempted': True, 'signal': name}
    if last_eval is None or last_eval.step != step:  # rerun of a finished run: nothing trained
      # No second line for this step when the finished run's evaluation is logged already.
      last_eval = evaluate_now(step, log=not writer.has(step, 'average_map'))
    checkpointing.wait_for_saves(manager)  # the best step's metrics are readable once saved
    best = manager.best_step()
    best_map = manager.metrics(best)[checkpointing.BEST_METRIC] if best is not None else None
    if jax.process_index() == 0:
      for seed, outputs, results in zip(seeds, last_eval.outputs, last_eval.results):
        _plot(eval_loop.seed_dir(workdir, seed, len(seeds)), outputs, results, eval_split,
              config)
    return eval_loop.write_results(config, workdir, step, last_eval.results, last_eval.scored,
                                   last_eval.fg_aucs, eval_split, best=(best, best_map),
                                   label='final')
  finally:
    profiler.stop()
    progress.close()
    iterator.close()
    writer.close()
    try:  # only reached with a save running when an error is already on its way out
      manager.wait_until_finished()
    except Exception:  # pylint: disable=broad-except  (reporting it would hide that error)
      pass
