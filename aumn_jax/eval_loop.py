"""Evaluation of a trained state: predict -> localize -> evaluate -> write.

`predict` runs the jitted eval step over a split (bucketed shapes, every process its share);
`localize_and_evaluate` turns per-snippet scores into proposals (localization.py) and scores
them (evaluation.py); `attention_auc` measures how well the foreground attention alone ranks
action snippets above background ones (logged at every evaluation as `fg_auc`);
`write_results` writes proposals_<split>.json, the ground truth they were scored against and
results.json (formats.py), and prints the table. `evaluate_checkpoint`
is evaluate.py's path: restore a checkpoint of a workdir and do the same, so its numbers equal
the in-training evaluation of that checkpoint. train_loop.py keeps only the cadence.

Several seeds (config.num_seeds = N > 1): `predict` returns one output dict per seed, each seed
is localized and scored alone, `summarize` gives the mean and sample std over seeds, and
`write_results` writes each seed's files into W/seed_<seed>/ (what a single run of that seed
writes into W) beside W/results.json holding the mean ± std and `per_seed`.
"""
import os
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from aumn_jax import checkpointing
from aumn_jax import config_checks
from aumn_jax import data
from aumn_jax import errors
from aumn_jax import evaluation
from aumn_jax import formats
from aumn_jax import input_pipeline
from aumn_jax import localization
from aumn_jax import parallel
from aumn_jax import train_step as train_step_lib


def predict(eval_fn, state, split, config: ml_collections.ConfigDict,
            mesh: jax.sharding.Mesh) -> list[dict[str, dict[str, np.ndarray]]]:
  """Runs eval_step over a whole split: per seed, {video_id: per-video outputs cut to its
  length}.

  The next batches are read in a background thread while the current one runs. The gathered
  outputs come back in global-batch order, whose video indices every process knows from the
  plan (input_pipeline.eval_plan): no index goes through the devices.
  """
  outputs = [{} for _ in range(config.num_seeds)]
  batch_size, buckets = config.data.eval_batch_size, config.data.eval_buckets
  batches = input_pipeline.eval_batches(  # checks the split and the settings first
      split, batch_size=batch_size, buckets=buckets,
      process_index=jax.process_index(), process_count=jax.process_count())
  plan = input_pipeline.eval_plan(split.lengths, batch_size=batch_size, buckets=buckets)
  with input_pipeline.Prefetcher(batches) as prefetched:
    for (_, index), host_batch in zip(plan, prefetched, strict=True):
      inputs = {k: host_batch[k] for k in train_step_lib.EVAL_INPUTS}
      result = parallel.to_host(
          eval_fn(state, parallel.to_global(inputs, parallel.batch_sharded(mesh))))
      for i, seed_outputs in enumerate(outputs):
        _collect(seed_outputs, train_step_lib.replica(result, i), index, split)
  return outputs


def _collect(outputs, result, index, split) -> None:
  """Adds a gathered eval batch (train_step.eval_step's structure) to `outputs`: per-snippet
  outputs cut to the video's length, per-video ones as they are; one flat dict per video."""
  for row, video_index in enumerate(index):
    if video_index < 0:
      continue
    length = int(split.lengths[video_index])
    outputs[split.video_ids[video_index]] = {
        **{k: v[row, :length] for k, v in result['per_snippet'].items()},
        **{k: v[row] for k, v in result['per_video'].items()}}


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
    videos.append(localization.VideoScores(
        video_id, scores, out['video_probs'], fps=meta['fps'],
        snippet_stride=meta['snippet_stride'], duration=meta['duration']))
  results = localization.localize(videos, config.localization, split.class_names)
  ground_truth = formats.load_ground_truth(
      data.ground_truth(split, config.data.eval_split), subset=config.data.eval_split)
  scored = evaluation.compute(ground_truth, formats.validate_results(results),
                              config.evaluation.tiou_thresholds, drop_unknown_labels=True)
  return results, scored


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Mann-Whitney ROC AUC: the probability that a positive scores above a negative, ties
  counted 1/2 (average ranks); NaN without both classes."""
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if not n_pos or not n_neg:
    return float('nan')
  order = np.argsort(scores, kind='stable')
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # Average rank within runs of equal scores.
  starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
  ends = np.r_[starts[1:], len(scores)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = (s + e + 1) / 2.0
  return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def attention_auc(outputs: dict[str, dict[str, np.ndarray]],
                  split: data.VideoSplit) -> Optional[float]:
  """ROC AUC of the foreground attention a against the ground truth, pooled over every snippet
  of the split (a snippet is an action snippet when it lies at least half inside an instance:
  VideoSplit.snippet_classes). None when the split has no action or no background snippet.

  Issue 9's measure of whether a tells action from background across videos; it reads the
  annotations, so like the mAP it is a test-split number, not one to choose settings on.
  """
  scores, labels = [], []
  for i, video_id in enumerate(split.video_ids):
    fg = np.asarray(outputs[video_id]['fg'], np.float64)
    scores.append(fg)
    labels.append(split.snippet_classes(i, len(fg)).any(axis=-1))
  value = roc_auc(np.concatenate(scores), np.concatenate(labels))
  return None if np.isnan(value) else value


# Keys of an evaluation that describe one run's predictions, not the seeds' summary: left out
# of metrics.jsonl (results.json keeps them).
PER_RUN_KEYS = ('ap_per_class', 'num_ground_truth', 'num_predictions')


def summarize(scored: list[evaluation.Evaluation], seeds: list[int],
              fg_aucs: list[Optional[float]]) -> dict[str, Any]:
  """One seed: its Evaluation.to_dict() and `fg_auc` (attention_auc). Several: `map`,
  `average_map` and `fg_auc` are means over seeds, `map_std` / `average_map_std` /
  `fg_auc_std` sample stds (ddof 1), `per_seed` [{seed, map, average_map, fg_auc}] in seed
  order. An undefined AUC (None) makes the seeds' mean None too."""
  if len(scored) == 1:
    return {**scored[0].to_dict(), 'fg_auc': fg_aucs[0]}
  maps = np.array([e.map for e in scored], np.float64)
  averages = np.array([e.average_map for e in scored], np.float64)
  defined = None not in fg_aucs
  aucs = np.array(fg_aucs if defined else [], np.float64)
  return {
      'tiou_thresholds': [float(t) for t in scored[0].tiou_thresholds],
      'map': maps.mean(axis=0).tolist(), 'average_map': float(averages.mean()),
      'map_std': maps.std(axis=0, ddof=1).tolist(), 'average_map_std': float(averages.std(ddof=1)),
      'fg_auc': float(aucs.mean()) if defined else None,
      'fg_auc_std': float(aucs.std(ddof=1)) if defined else None,
      'num_seeds': len(seeds),
      'per_seed': [{'seed': int(s), 'map': m.tolist(), 'average_map': float(a), 'fg_auc': u}
                   for s, m, a, u in zip(seeds, maps, averages, fg_aucs)]}


def format_average(summary: dict[str, Any]) -> str:
  """'72.21', or '71.50 ± 1.51 over 3 seeds' (percent)."""
  if 'per_seed' not in summary:
    return f'{100 * summary["average_map"]:.2f}'
  return (f'{100 * summary["average_map"]:.2f} ± {100 * summary["average_map_std"]:.2f} over '
          f'{summary["num_seeds"]} seeds')


def format_auc(summary: dict[str, Any]) -> str:
  """'0.812', '0.805 ± 0.021 over 3 seeds', or 'undefined' (no action or no background
  snippet in the split)."""
  if summary['fg_auc'] is None:
    return 'undefined (the split has no action or no background snippet)'
  if 'per_seed' not in summary:
    return f'{summary["fg_auc"]:.3f}'
  return (f'{summary["fg_auc"]:.3f} ± {summary["fg_auc_std"]:.3f} over '
          f'{summary["num_seeds"]} seeds')


def seed_dir(workdir: str, seed: int, num_seeds: int) -> str:
  """Where one seed's proposals, results and plots go: W itself for a single seed."""
  return workdir if num_seeds == 1 else os.path.join(workdir, f'seed_{seed}')


def format_seeds_table(summary: dict[str, Any], ground_truth_name: str,
                       proposals_name: str) -> str:
  """The printed table of several seeds: mAP mean ± std per tIoU, then each seed's average."""
  lines = [f'{ground_truth_name} vs {proposals_name}: mAP (%) over seeds '
           f'{[e["seed"] for e in summary["per_seed"]]}, mean ± sample std',
           'tIoU   mAP']
  for t, m, sd in zip(summary['tiou_thresholds'], summary['map'], summary['map_std']):
    lines.append(f'{t:<6.2f} {100 * m:6.2f} ± {100 * sd:.2f}')
  lines.append(f'avg    {format_average(summary)}')
  lines.append('per seed: ' + ', '.join(f'{e["seed"]}: {100 * e["average_map"]:.2f}'
                                        for e in summary['per_seed']))
  return '\n'.join(lines)


def protocol_for(tiou_thresholds) -> Optional[evaluation.Protocol]:
  """The benchmark protocol whose thresholds these are (for the table's averages), if any."""
  for protocol in evaluation.PROTOCOLS.values():
    if np.allclose(protocol.tiou_thresholds, tiou_thresholds):
      return protocol
  return None


def write_results(config, workdir, step, results, scored, fg_aucs, split, *,
                  best=(None, None), label='final') -> dict[str, Any]:
  """proposals_<split>.json, ground_truth_<split>.json, results.json and the printed table.

  `results`, `scored` and `fg_aucs` (attention_auc) hold one entry per seed. The ground truth
  is the one the proposals were scored against, so `evaluate.py --ground_truth
  W/ground_truth_test.json --proposals W/proposals_test.json --drop_unknown_labels` reproduces results.json from the files alone
  (several seeds: W/seed_<seed>/ holds each seed's three files, W/results.json the summary).

  `best` = (step, average mAP, the mean over seeds) of the best-by-test checkpoint, reported
  beside the headline (final) numbers and labelled as the optimistic choice it is.
  """
  seeds = train_step_lib.seeds(config)
  summary = {**summarize(scored, seeds, fg_aucs), 'step': int(step)}
  if best[0] is not None:
    summary['best_by_test_map'] = {
        'step': int(best[0]), 'average_map': float(best[1]),
        'note': 'checkpoint selected by test mAP: optimistic, not the headline number'}
  if jax.process_index() == 0:
    split_name = config.data.eval_split
    truth = data.ground_truth(split, split_name)
    for seed, seed_results, seed_scored, seed_auc in zip(seeds, results, scored, fg_aucs):
      out_dir = seed_dir(workdir, seed, len(seeds))
      os.makedirs(out_dir, exist_ok=True)
      formats.write_proposals(os.path.join(out_dir, f'proposals_{split_name}.json'),
                              seed_results)
      formats.write_json(os.path.join(out_dir, f'ground_truth_{split_name}.json'), truth)
      if len(seeds) > 1:
        formats.write_json(os.path.join(out_dir, 'results.json'),
                           {**seed_scored.to_dict(), 'fg_auc': seed_auc, 'seed': int(seed),
                            'step': int(step)})
    formats.write_json(os.path.join(workdir, 'results.json'), summary)
    names = dict(ground_truth_name=f'{config.data.dataset}/{split_name}',
                 proposals_name=f'step {step} ({label})')
    if len(seeds) == 1:
      print(evaluation.format_table(
          scored[0], protocol=protocol_for(scored[0].tiou_thresholds), **names), flush=True)
    else:
      print(format_seeds_table(summary, **names), flush=True)
    print(f'foreground attention a vs ground-truth snippets: ROC AUC {format_auc(summary)}',
          flush=True)
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
  config_checks.check_same_run(config, workdir)
  mesh = parallel.make_mesh(num_seeds=config.num_seeds)
  config_checks.validate_config(config, mesh)
  if not os.path.isdir(os.path.join(workdir, 'checkpoints')):
    raise errors.TrainingError(f'{workdir}: no checkpoints/ directory (train there first)')
  manager = checkpointing.create_manager(workdir, read_only=True)
  if not manager.all_steps():
    raise errors.TrainingError(f'{workdir}/checkpoints: holds no checkpoint (train there first)')
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
  target = train_step_lib.init_state(config, eval_split.num_classes, mesh)
  try:
    state = checkpointing.restore(manager, step, target)
  except Exception as e:  # pylint: disable=broad-except  (orbax/tensorstore raise many types)
    others = ', '.join(f'--step={s}' for s in manager.all_steps() if s != step)
    raise errors.TrainingError(
        f'{workdir}/checkpoints/{step}: does not restore ({checkpointing.restore_failure(e)}); '
        + (f'evaluate another step ({others}) or rerun' if others else 'rerun')
        + ' train.py, which sets it aside and resumes from an earlier one') from e
  _, eval_fn = train_step_lib.jit_steps(config, mesh)
  outputs = predict(eval_fn, state, eval_split, config, mesh)
  localized = [localize_and_evaluate(o, eval_split, config) for o in outputs]
  results, scored = [r for r, _ in localized], [e for _, e in localized]
  fg_aucs = [attention_auc(o, eval_split) for o in outputs]
  out_dir = os.path.join(workdir, f'eval_step_{step}')
  if jax.process_index() == 0:
    os.makedirs(out_dir, exist_ok=True)
  return write_results(config, out_dir, step, results, scored, fg_aucs, eval_split,
                       label=label)
