"""aumn_jax/files.py: a write either lands whole or leaves the old file and no debris."""
import os

import pytest

from aumn_jax import errors
from aumn_jax import files
from aumn_jax import formats
from aumn_jax import metric_writer


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / 'config.json'
  files.write_atomic(path, 'old')
  files.write_atomic(str(path), 'new ✓')
  assert path.read_text(encoding='utf-8') == 'new ✓'
  assert os.listdir(tmp_path) == ['config.json']


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
  path = tmp_path / 'results.json'
  path.write_text('old')

  def disk_full(src, dst):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(os, 'replace', disk_full)
  with pytest.raises(OSError, match='No space left'):
    files.write_atomic(path, 'new')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['results.json']
  # The evaluator's JSON writer says it in one line naming the file.
  with pytest.raises(formats.InputError, match=r'results.json: cannot write: No space left'):
    formats.write_json(path, {'a': 1})
  assert path.read_text() == 'old'


def test_a_missing_directory_is_an_oserror_and_creates_nothing(tmp_path):
  with pytest.raises(OSError):
    files.write_atomic(tmp_path / 'nope' / 'x.json', '{}')
  assert os.listdir(tmp_path) == []


def test_metrics_log_drops_a_line_cut_short_and_names_a_damaged_one(tmp_path):
  """metric_writer on resume: a last line cut short (a full disk, a kill mid-write) goes; a
  damaged line before it is one error naming the file and the line."""
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  metric_writer.MetricWriter(str(tmp_path), resume_step=2, enabled=True).close()
  assert path.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
  path.write_text('{"step": 1, "loss": 2.0}\n{"ste\n{"step": 2, "loss": 1.5}\n')
  with pytest.raises(errors.TrainingError, match=r'metrics.jsonl: line 2 is not JSON'):
    metric_writer.MetricWriter(str(tmp_path), resume_step=2, enabled=True)
