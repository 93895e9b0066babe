"""Run outputs other than checkpoints: metrics.jsonl, config.json, resumes.jsonl, TensorBoard.

Only process 0 writes; on other processes every method is a no-op, so callers never branch.
`metrics.jsonl` holds one JSON object per logged step: training lines carry `step`, `loss`
(the total) and every loss term and diagnostic; evaluation lines carry `step` and the
evaluator's keys. With several seeds a line's values are means over seeds and `per_seed` lists
[{seed, key: value, ...}] (TensorBoard: PREFIX/seed_<seed>/KEY).
"""
import datetime
import json
import math
import os
from typing import Any, Mapping

import jax

from aumn_jax import errors
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
    scalars = [(prefix + k, v) for k, v in line.items() if k != 'step']
    for entry in line.get('per_seed', []):  # several seeds: PREFIX/seed_<seed>/KEY each
      scalars += [(f'{prefix}seed_{entry["seed"]}/{k}', v) for k, v in entry.items()
                  if k != 'seed']
    for tag, value in scalars:
      if isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(tag, value, step)
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
    """Closes both files. On a full disk their final flush fails: that is left unreported
    (the write that hit it was already reported), and TensorBoard's event writer is marked
    closed so that tensorboardX does not retry the flush at exit with a traceback."""
    if not self.enabled:
      return
    try:
      self._jsonl.close()
    except OSError:
      pass
    try:
      self._tb.close()
    except OSError:  # what tensorboardX's close does after its failed flush, minus the flush
      # pylint: disable=protected-access
      event_writer = getattr(getattr(self._tb, 'file_writer', None), 'event_writer', None)
      if event_writer is not None and not event_writer._closed:
        event_writer._worker.stop()
        event_writer._closed = True


def _to_json(value: Any) -> Any:
  if hasattr(value, 'tolist'):
    value = value.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/Inf; keep the line parseable
  return value


def _truncate_after(path: str, step: int) -> None:
  """Keeps the lines of `path` whose step is <= `step` (atomically; absent file: nothing).

  A last line cut short (a full disk or a kill mid-write) is dropped; a damaged line before
  it is an error naming the file and the line."""
  if not os.path.exists(path):
    return
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.readlines()
  kept = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      if number == len(lines):
        continue
      raise errors.TrainingError(
          f'{path}: line {number} is not JSON; move the file aside to start a new log') from None
    if record['step'] <= step:
      kept.append(line if line.endswith('\n') else line + '\n')
  if kept != lines:
    files.write_atomic(path, ''.join(kept))
