"""Run outputs other than checkpoints: metrics.jsonl, config.json, resumes.jsonl, TensorBoard.

Only process 0 writes; on other processes every method is a no-op, so callers never branch.
`metrics.jsonl` holds one JSON object per logged step: training lines carry `step`, `loss`
(the total) and every loss term and diagnostic; evaluation lines carry `step` and the
evaluator's keys.
"""
import datetime
import json
import math
import os
from typing import Any, Mapping

import jax

from aumn_jax import files


class MetricWriter:
  """Appends to W/metrics.jsonl and writes TensorBoard scalars under W/tensorboard."""

  def __init__(self, workdir: str, *, resume_step: int = 0, enabled: bool | None = None):
    """`resume_step`: the step the run restarts from; lines logged after it by a run that was
    killed before its next checkpoint are dropped, as that run will log those steps again."""
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, 'metrics.jsonl')
      _truncate_after(path, resume_step)
      self._jsonl = open(path, 'a', encoding='utf-8')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    self.workdir = workdir

  def write(self, step: int, metrics: Mapping[str, Any], prefix: str = '') -> None:
    """One JSON line (`step` first) and one TensorBoard scalar per numeric value."""
    if not self.enabled:
      return
    line = {'step': int(step)}
    for key, value in metrics.items():
      line[key] = _to_json(value)
    self._jsonl.write(json.dumps(line) + '\n')
    self._jsonl.flush()
    for key, value in line.items():
      if key != 'step' and isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(prefix + key, value, step)
    self._tb.flush()

  def has(self, step: int, key: str) -> bool:
    """Whether metrics.jsonl already holds a line of `step` with `key` (process 0's view)."""
    path = os.path.join(self.workdir, 'metrics.jsonl')
    if not os.path.exists(path):
      return False
    with open(path, encoding='utf-8') as f:
      lines = [json.loads(l) for l in f if l.strip()]
    return any(line['step'] == step and key in line for line in lines)

  def write_config(self, config) -> None:
    if self.enabled:
      files.write_atomic(os.path.join(self.workdir, 'config.json'),
                         config.to_json_best_effort(indent=2))

  def write_resume(self, step: int, changed: Mapping[str, Any]) -> None:
    """Appends to W/resumes.jsonl: when the run was resumed, from which step, what changed."""
    if self.enabled:
      line = {'step': int(step), 'time': datetime.datetime.now().isoformat(timespec='seconds'),
              'changed': dict(changed)}
      with open(os.path.join(self.workdir, 'resumes.jsonl'), 'a', encoding='utf-8') as f:
        f.write(json.dumps(line) + '\n')

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _to_json(value: Any) -> Any:
  if hasattr(value, 'tolist'):
    value = value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep the line parseable
  return value


def _truncate_after(path: str, step: int) -> None:
  """Keeps the lines of `path` whose step is <= `step` (atomically; absent file: nothing)."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  kept = [l for l in lines if l.strip() and json.loads(l)['step'] <= step]
  if len(kept) != len(lines):
    files.write_atomic(path, ''.join(kept))
