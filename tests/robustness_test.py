"""benchmarks/robustness.py's metrics against independent computations."""
import json

import numpy as np
import pytest
from absl import app

from aumn_jax import errors
from aumn_jax import train_loop
from benchmarks import robustness


# The tiny data's runs: a small model, short clips (overrides of robustness.make_config).
_SHRINK = [('model.dim', 16), ('model.num_units', 4), ('data.max_snippets', 32),
           ('batch_size', 8), ('data.eval_batch_size', 8), ('optim.learning_rate', 1e-4),
           ('data.eval_buckets', [64, 128, 256])]


def test_plateau_counts_logged_steps_outside_the_band_from_step_20():
  trace = [(10, 0.01), (20, 0.02), (30, 0.5), (40, 0.97), (50, 0.95), (60, 0.05)]
  # step 10 is before the window; 20 and 40 are outside [0.05, 0.95]; the edges are inside.
  assert robustness.plateau_steps(trace) == 2 * robustness.LOG_EVERY
  # A line stands for the steps since the previous line (evaluations log off the grid).
  assert robustness.plateau_steps([(10, 0.5), (20, 0.01), (25, 0.01), (30, 0.5)]) == 15


def test_video_top1_counts_a_hit_when_the_top_action_class_is_true():
  class Split:  # the three things video_top1 reads of a data.VideoSplit
    video_ids = ['a', 'b', 'c']
    class_names = ['x', 'y']
    num_classes = 2

    def annotations(self, i):
      return [[{'segment': [0, 1], 'label': 'x'}], [{'segment': [0, 1], 'label': 'y'}], []][i]

  # Background (last column) is ignored even when it is the largest; 'c' has no ground truth.
  outputs = {'a': {'video_probs': np.array([0.3, 0.1, 0.6])},
             'b': {'video_probs': np.array([0.5, 0.4, 0.1])},
             'c': {'video_probs': np.array([0.1, 0.8, 0.1])}}
  assert robustness.video_top1(outputs, Split()) == 0.5


def test_overrides_parse_json_values_and_refuse_unknown_keys():
  assert robustness.parse_overrides(['loss.lambda_sp=0', 'model.head=mil', 'a.b=[1,2]']) == [
      ('loss.lambda_sp', 0), ('model.head', 'mil'), ('a.b', [1, 2])]
  with pytest.raises(app.UsageError, match="--set 'nokey': expected KEY=VALUE"):
    robustness.parse_overrides(['nokey'])
  config = robustness.make_config('small', 'mil', 0, 5, 0, '/d')
  robustness.apply_override(config, 'data.eval_buckets', [64, 128])
  assert config.data.eval_buckets == (64, 128)
  with pytest.raises(app.UsageError, match="config has no field 'loss.lambda_nope'"):
    robustness.apply_override(config, 'loss.lambda_nope', 1.0)
  with pytest.raises(app.UsageError, match="config has no field 'nope.lambda_sp'"):
    robustness.apply_override(config, 'nope.lambda_sp', 1.0)
  with pytest.raises(app.UsageError, match=r"model.shared_classifier='True': bool expected, got "
                     r"str \(values are JSON: true"):
    robustness.apply_override(config, 'model.shared_classifier', 'True')


def test_unit_specificity_spans_specific_to_shared():
  specific = np.vstack([np.eye(4), np.full((1, 4), 0.25)])     # class c reads unit c only
  shared = np.full((5, 4), 0.25)                                # every class reads all units
  assert robustness.unit_specificity(specific) == {'class_spread': 0.0, 'unit_sharing': 0.0}
  got = robustness.unit_specificity(shared)
  np.testing.assert_allclose([got['class_spread'], got['unit_sharing']], [1.0, 1.0])
  # Two classes share unit 0 equally and nothing else: half the mass is shared.
  half = np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]])
  got = robustness.unit_specificity(half)
  np.testing.assert_allclose(got['class_spread'], np.log(2) / np.log(3))
  np.testing.assert_allclose(got['unit_sharing'], 0.5)   # weight 1/2 on unit 0 (H = log 2)


def _row(seed, avg, by_score):
  return {'regime': 'r', 'model': 'small', 'head': 'mil', 'seed': seed, 'avg_0.1:0.7': avg,
          'top1': 1.0, 'fg_auc': 0.9, 'plateau_steps': 0, 'fg_min': 0.2, 'fg_max': 0.6,
          'avg_by_score': by_score}


def test_localization_score_columns_only_for_scores_every_seed_has():
  rows = [_row(0, 0.40, {'class': 0.40, 'actionness': 0.50}),
          _row(1, 0.44, {'class': 0.44, 'actionness': 0.54, 'class_x_actionness': 0.6})]
  summary = robustness.summarize(rows)
  assert list(summary[0]['by_score']) == ['class', 'actionness']
  mean, std = summary[0]['by_score']['actionness']
  np.testing.assert_allclose([mean, std], [0.52, np.std([0.50, 0.54], ddof=1)])
  table = robustness.markdown(summary, 300, 1, 'cmd', [])
  header, _, line = table.splitlines()[2:5]
  assert header.endswith('| score=class | score=actionness |')
  assert line.endswith('| 42.0 ± 2.8 | 52.0 ± 2.8 |')
  # Rows scored with nothing extra: the table is today's, column for column.
  plain = robustness.markdown(robustness.summarize([_row(0, 0.4, {})]), 300, 1, 'cmd', [])
  assert 'score=' not in plain


def test_evaluations_during_training_are_read_and_tabled(tmp_path):
  """read_curves takes (step, mAP, AUC(a)) of each eval line (of one seed of a program); the
  markdown gets a per-step table when there is more than one evaluation; runs whose logs
  predate the AUC line (2-tuples, or None) add no step."""
  lines = [{'step': 10, 'diag_fg_mean': 0.4},
           {'step': 100, 'per_seed': [{'seed': 0, 'average_map': 0.2, 'fg_auc': 0.7},
                                      {'seed': 1, 'average_map': 0.3, 'fg_auc': 0.8}]},
           {'step': 200, 'average_map': 0.5}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
  assert robustness.read_curves(str(tmp_path), 1) == ([(10, 0.4)], [(100, 0.3, 0.8),
                                                                    (200, 0.5, None)])
  rows = [{**_row(0, 0.40, {}), 'eval_curve': [(100, 0.20, 0.70), (300, 0.40, 0.80)]},
          {**_row(1, 0.44, {}), 'eval_curve': [[100, 0.30, 0.74], [300, 0.44, 0.84]]}]
  summary = robustness.summarize(rows)
  assert [c['step'] for c in summary[0]['curve']] == [100, 300]
  np.testing.assert_allclose(summary[0]['curve'][0]['fg_auc'],
                             [0.72, np.std([0.70, 0.74], ddof=1)])
  table = robustness.markdown(summary, 300, 1, 'cmd', [])
  assert '| regime | model | head | step 100 | step 300 |' in table
  assert ('| r | small | mil | 25.0 ± 7.1 / 0.720 ± 0.028 | 42.0 ± 2.8 / 0.820 ± 0.028 |'
          in table)
  old = [{**r, 'eval_curve': [(300, r['avg_0.1:0.7'])]} for r in rows]  # an older cache
  assert robustness.summarize(old)[0]['curve'] == []
  assert 'step 300 |' not in robustness.markdown(robustness.summarize(old), 300, 1, 'cmd', [])


def test_seeds_of_a_configuration_are_one_program_equal_to_separate_runs(tiny_data_dir,
                                                                          tmp_path):
  """run_seeds([0, 1]) trains one num_seeds=2 program whose per-seed rows are the rows of
  run_seeds([0]) and run_seeds([1]); a second call reads the cached rows."""
  run = lambda seeds, name: robustness.run_seeds(
      'tiny', 'small', 'aumn', seeds, 4, 0, tiny_data_dir, str(tmp_path / name), _SHRINK)
  assert robustness.consecutive([0, 1, 2, 5, 7, 8]) == [[0, 1, 2], [5], [7, 8]]
  assert robustness.program_dir([0, 1, 2]) == 'seeds_0-2'
  assert robustness.program_dir([5]) == 'seed_5'
  together = run([0, 1], 'together')
  assert [r['seed'] for r in together] == [0, 1]
  assert all(r['program_seeds'] == [0, 1] for r in together)
  for row in together:
    alone = run([row['seed']], f'alone{row["seed"]}')[0]
    assert row['avg_0.1:0.7'] == pytest.approx(alone['avg_0.1:0.7'], abs=1e-4)
    assert row['fg_auc'] == pytest.approx(alone['fg_auc'], abs=1e-4)
    assert [s for s, _ in row['fg_trace']] == [s for s, _ in alone['fg_trace']]
    np.testing.assert_allclose([a for _, a in row['fg_trace']],
                               [a for _, a in alone['fg_trace']], rtol=1e-5)
  # A second call reads the cached rows (JSON: tuples come back as lists), not a retrain.
  assert run([0, 1], 'together') == json.loads(json.dumps(together))


def test_a_stopped_run_is_one_error_line_and_the_rerun_resumes_it(tiny_data_dir, tmp_path,
                                                                   monkeypatch):
  """SIGTERM / Ctrl-C stops the loop with a checkpoint and no results: run_seeds says so in
  one line (was a KeyError on the missing mAP) and caches nothing; the same call again
  resumes the run, and its rows are those of the uninterrupted run."""
  run = lambda name: robustness.run_seeds(
      'tiny', 'small', 'mil', [0], 4, 0, tiny_data_dir, str(tmp_path / name), _SHRINK)
  real_should_stop = train_loop._Preemption.should_stop

  def stop_at_step_2(self, step, every):
    if step == 2:
      self.requested = 'SIGTERM'  # as the loop's own handler records a signal
    return real_should_stop(self, step, every)

  with monkeypatch.context() as m:
    m.setattr(train_loop._Preemption, 'should_stop', stop_at_step_2)
    with pytest.raises(errors.TrainingError, match=r'stopped by SIGTERM at step 2 of 4 .*'
                       r'rerun the same command to resume'):
      run('stopped')
  assert not (tmp_path / 'stopped' / robustness.ROW_FILE).exists()
  resumed, = run('stopped')
  uninterrupted, = run('uninterrupted')
  assert resumed['avg_0.1:0.7'] == pytest.approx(uninterrupted['avg_0.1:0.7'], abs=1e-4)
  assert resumed['fg_auc'] == pytest.approx(uninterrupted['fg_auc'], abs=1e-4)
