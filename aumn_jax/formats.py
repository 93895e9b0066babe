"""The evaluator's file formats, read, validated and written (SPEC.md §6).

Holds: the proposals format (`validate_results` / `write_proposals` / `load_proposals`, the one
definition the localization code exports through, parsed into `Proposals`), the ground-truth
reader (`load_ground_truth`, ActivityNet-style gt.json, parsed into `GroundTruth`), THUMOS14's
ambiguous-segment list (`load_ambiguous`), the one segment rule all three share, the atomic JSON
writer (`write_json`) and `InputError`, the one-line error for bad input (evaluation.py raises it
too). NumPy only: it never imports jax, so reading a proposals file needs no accelerator stack.
Deliberately does not hold: the metric, its protocols and the printed table
(aumn_jax/evaluation.py, which imports this module; this one never imports it), localization
(CAS -> proposals, aumn_jax/localization.py), the CLI (evaluate.py), the dataset builders'
gt.json reader (data_prep/layouts.py, which keeps every subset and the durations).

The rules:
  * a segment is [start, end], two finite numbers with 0 <= start <= end; ground truth and
    proposals also accept numeric strings ("18.6", UM's gt.json; the ActivityNet code float()s
    them), an ambiguous-segment mapping does not; bool is never a number;
  * a ground-truth annotation is {"segment": segment, "label": str}, read only for the videos
    whose "subset" is the one asked for;
  * a prediction is {"label": str, "score": finite number, "segment": segment}; extra keys are
    ignored; videos keep the order of the results object and predictions their list order (the
    order that breaks score ties in the metric);
  * every error is an InputError whose message is one line naming the file (or object), the
    entry (e.g. results['video_test_0000004'][3]['segment']) and the problem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from aumn_jax import errors
from aumn_jax import files


class InputError(errors.UserError, ValueError):
  """Malformed input; str(error) is one line naming the file (or object) and the problem."""


# Numbers accepted in a segment or score. JSON gives int/float; the writer also sees NumPy scalars
# from the localization code. bool is an int subclass and is refused explicitly.
_NUMBER_TYPES = (int, float, np.integer, np.floating)


def _is_number_type(t: type) -> bool:
  return issubclass(t, _NUMBER_TYPES) and not issubclass(t, (bool, np.bool_))


# ---------------------------------------------------------------------------------------------
# Reading and writing JSON.


@contextlib.contextmanager
def _gc_paused():
  # A THUMOS proposals file parses into ~4 * 10^5 containers; while they are alive every
  # allocation-triggered cyclic-GC pass walks them again, which took longer than parsing and
  # validating together. Nothing here creates cycles: refcounting frees it all.
  enabled = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if enabled:
      gc.enable()


def _read_json(path: str | os.PathLike[str]) -> Any:
  name = os.fspath(path)
  try:
    with open(name, 'rb') as f:
      raw = f.read()
  except OSError as e:
    raise InputError(f'{name}: cannot read: {e.strerror or e}') from None
  try:
    return json.loads(raw)
  except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, >4300-digit integers
    raise InputError(f'{name}: not valid JSON: {e}') from None


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
  """Writes `obj` as JSON atomically (files.write_atomic): the old file or the whole new one.

  Raises InputError (one line) when the file cannot be written.
  """
  text = json.dumps(obj, allow_nan=False)
  try:
    files.write_atomic(path, text)
  except OSError as e:
    raise InputError(f'{os.fspath(path)}: cannot write: {e.strerror or e}') from None


# ---------------------------------------------------------------------------------------------
# Segments: one rule for ground truth, proposals and ambiguous segments.


def _segment_problem(seg: Any, *, strings: bool = True) -> str | None:
  """Why `seg` is not a valid [start, end] (None when it is). Mirrors `_segments_array`."""
  if not isinstance(seg, (list, tuple)) or len(seg) != 2:
    return f'must be a list [start, end], got {_short(seg)}'
  values = []
  for x in seg:
    if not (_is_number_type(type(x)) or (strings and isinstance(x, str))):
      return f'{_short(x)} is not a number'
    try:
      v = float(x)
    except (ValueError, OverflowError):
      return f'{_short(x)} is not a number'
    if not math.isfinite(v):
      return f'{_short(x)} is not finite'
    values.append(v)
  start, end = values
  if start < 0:
    return f'start {start!r} is negative'
  if end < start:
    return f'end {end!r} < start {start!r}'
  return None


def _short(x: Any, limit: int = 60) -> str:
  r = repr(x)
  return r if len(r) <= limit else r[:limit - 3] + '...'


def _segments_array(segs: Sequence[Any]) -> np.ndarray | None:
  """[M, 2] float64 of valid segments, or None if one is invalid (`_segment_problem` says why)."""
  m = len(segs)
  try:
    if m and (not all(issubclass(t, (list, tuple)) for t in set(map(type, segs)))
              or set(map(len, segs)) != {2}):
      return None
    flat = list(itertools.chain.from_iterable(segs))
    types = set(map(type, flat))
    if not all(_is_number_type(t) or issubclass(t, str) for t in types):
      return None
    has_str = any(issubclass(t, str) for t in types)
    out = np.fromiter(map(float, flat) if has_str else flat, np.float64,
                      count=2 * m).reshape(m, 2)
  except (TypeError, ValueError, OverflowError):
    return None
  with np.errstate(invalid='ignore'):
    ok = np.isfinite(out).all() and (out[:, 0] >= 0).all() and (out[:, 1] >= out[:, 0]).all()
  return out if ok else None


# ---------------------------------------------------------------------------------------------
# Ground truth.


@dataclasses.dataclass(frozen=True, eq=False)
class GroundTruth:
  """Ground-truth segments of one subset, in file order.

  Attributes:
    subset: the subset these segments come from.
    class_names: classes with ground truth in the subset, in order of first appearance (the order
      the ActivityNet code indexes and averages them in).
    video_ids: all videos of the subset, in file order (also those without segments).
    video: int64 [N] index into video_ids per segment.
    label: int64 [N] index into class_names per segment.
    segments: float64 [N, 2] [start, end] in seconds.
    source: file name (or '<dict>') for messages.
  """
  subset: str
  class_names: tuple[str, ...]
  video_ids: tuple[str, ...]
  video: np.ndarray
  label: np.ndarray
  segments: np.ndarray
  source: str = '<dict>'

  def __len__(self) -> int:
    return len(self.label)


def load_ground_truth(source: str | os.PathLike[str] | Mapping[str, Any],
                      subset: str = 'test') -> GroundTruth:
  """Reads an ActivityNet-style ground truth: {"database": {video: {"subset", "annotations"}}}.

  Accepts the UM/BaS-Net file (string segments such as "18.6", only the key "database", no
  durations) and the ACM-Net/ActivityNet ones (floats, extra keys); only videos of `subset` are
  read and checked.

  Args:
    source: path of gt.json, or the already-parsed dict (e.g. `data.ground_truth(...)`).
    subset: value of the videos' "subset" field to evaluate.

  Returns:
    GroundTruth.

  Raises:
    InputError: unreadable/malformed file, missing keys, a bad segment or label, or no ground
      truth in `subset`.
  """
  with _gc_paused():
    return _load_ground_truth(source, subset)


def _top_level(source, key: str) -> tuple[Any, str]:
  """(data[key], name) of a JSON path or parsed dict; InputError unless it is an object with key."""
  if isinstance(source, Mapping):
    data, name = source, '<dict>'
  else:
    name = os.fspath(source)
    data = _read_json(name)
  if not isinstance(data, Mapping):
    raise InputError(f"{name}: top level must be a JSON object with key '{key}'")
  if key not in data:
    raise InputError(f"{name}: missing key '{key}'")
  return data[key], name


def _load_ground_truth(source, subset):
  database, name = _top_level(source, 'database')
  if not isinstance(database, Mapping):
    raise InputError(f"{name}: 'database' must be an object mapping video id to its entry")

  class_index: dict[str, int] = {}
  video_ids: list[str] = []
  video, label, segments = [], [], []
  subsets_seen = set()
  for vid, entry in database.items():
    where = f'{name}: database[{vid!r}]'
    if not isinstance(entry, Mapping):
      raise InputError(f"{where}: must be an object with keys 'subset' and 'annotations'")
    if 'subset' not in entry:
      raise InputError(f"{where}: missing key 'subset'")
    subsets_seen.add(str(entry['subset']))
    if entry['subset'] != subset:
      continue
    if 'annotations' not in entry:
      raise InputError(f"{where}: missing key 'annotations'")
    annotations = entry['annotations']
    if not isinstance(annotations, list):
      raise InputError(f"{where}['annotations']: must be a list")
    v = len(video_ids)
    video_ids.append(vid)
    for j, ann in enumerate(annotations):
      here = f"{where}['annotations'][{j}]"
      if not isinstance(ann, Mapping):
        raise InputError(f"{here}: must be an object with keys 'segment' and 'label'")
      for key in ('segment', 'label'):
        if key not in ann:
          raise InputError(f"{here}: missing key '{key}'")
      problem = _segment_problem(ann['segment'])
      if problem:
        raise InputError(f"{here}['segment']: {problem}")
      if not isinstance(ann['label'], str):
        label = ann['label']
        raise InputError(f"{here}['label']: must be a string, got {_short(label)}")
      video.append(v)
      label.append(class_index.setdefault(ann['label'], len(class_index)))
      segments.append((float(ann['segment'][0]), float(ann['segment'][1])))
  if not video_ids:
    raise InputError(f'{name}: no videos with subset {subset!r} '
                     f'(subsets present: {", ".join(sorted(subsets_seen)) or "none"})')
  if not segments:
    raise InputError(f'{name}: the {len(video_ids)} videos of subset {subset!r} have no '
                     'ground-truth segments')
  return GroundTruth(
      subset=subset, class_names=tuple(class_index), video_ids=tuple(video_ids),
      video=np.asarray(video, np.int64), label=np.asarray(label, np.int64),
      segments=np.asarray(segments, np.float64).reshape(-1, 2), source=name)


# ---------------------------------------------------------------------------------------------
# Proposals: the one definition of the format.


@dataclasses.dataclass(frozen=True, eq=False)
class Proposals:
  """Predictions of a results object, grouped by video in file order.

  Attributes:
    video_ids: videos in the order of the results object.
    video_offsets: int64 [V + 1]; predictions of video i are rows video_offsets[i]:[i + 1].
    video: int64 [M] index into video_ids.
    label_names: distinct labels in order of first appearance.
    label: int64 [M] index into label_names.
    scores: float64 [M].
    segments: float64 [M, 2] [start, end] in seconds.
    source: file name (or 'results') for messages.
  """
  video_ids: tuple[str, ...]
  video_offsets: np.ndarray
  video: np.ndarray
  label_names: tuple[str, ...]
  label: np.ndarray
  scores: np.ndarray
  segments: np.ndarray
  source: str = 'results'

  def __len__(self) -> int:
    return len(self.scores)

  def location(self, i: int) -> str:
    """'results[<video>][<j>]' of prediction row i, for messages."""
    v = int(self.video[i])
    return f'results[{self.video_ids[v]!r}][{i - int(self.video_offsets[v])}]'


def _prediction_problem(pred: Any) -> str | None:
  """Why one prediction is invalid, as '<suffix>: <problem>' (None when it is valid)."""
  if not isinstance(pred, Mapping):
    return f": must be an object with keys 'label', 'score', 'segment', got {_short(pred)}"
  for key in ('label', 'score', 'segment'):
    if key not in pred:
      return f": missing key '{key}'"
  if not isinstance(pred['label'], str):
    label = pred['label']
    return f"['label']: must be a string, got {_short(label)}"
  score = pred['score']
  if not _is_number_type(type(score)):
    return f"['score']: must be a number, got {_short(score)}"
  try:
    finite = math.isfinite(float(score))
  except OverflowError:
    finite = False
  if not finite:
    return f"['score']: {_short(score)} is not finite"
  problem = _segment_problem(pred['segment'])
  if problem:
    return f"['segment']: {problem}"
  return None


def validate_results(results: Any, source: str = 'results') -> Proposals:
  """Checks a results object {video: [{"label", "score", "segment": [s, e]}]} and parses it.

  The single definition of a valid prediction, used by `load_proposals` and `write_proposals`:
  label a string; score a finite number; segment two finite numbers (numeric strings accepted,
  as the ActivityNet code float()s them) with 0 <= start <= end. Extra keys are ignored.

  Args:
    results: the "results" mapping.
    source: name for messages (the file name when loading).

  Returns:
    Proposals.

  Raises:
    InputError: naming the first offending entry, e.g.
      "P.json: results['video_test_0000004'][3]['segment']: end 12.0 < start 13.5".
  """
  if not isinstance(results, Mapping):
    raise InputError(f"{source}: 'results' must be an object mapping video id to a list of "
                     f'predictions, got {type(results).__name__}')
  video_ids, counts, items = [], [], []
  for vid, preds in results.items():
    if not isinstance(vid, str):
      raise InputError(f'{source}: results: video id {vid!r} is not a string')
    if not isinstance(preds, (list, tuple)):
      raise InputError(f'{source}: results[{vid!r}]: must be a list of predictions, '
                       f'got {_short(preds)}')
    video_ids.append(vid)
    counts.append(len(preds))
    items.extend(preds)
  m = len(items)

  parsed = None
  try:  # fast path: whole-list extraction and set-of-types / vectorized checks
    labels = [pred['label'] for pred in items]
    scores = [pred['score'] for pred in items]
    segs = [pred['segment'] for pred in items]
    if (all(issubclass(t, str) for t in set(map(type, labels)))
        and all(_is_number_type(t) for t in set(map(type, scores)))):
      scores_arr = np.fromiter(scores, np.float64, count=m)
      segments = _segments_array(segs)
      if segments is not None and np.isfinite(scores_arr).all():
        parsed = scores_arr, segments
  except (TypeError, KeyError, ValueError, OverflowError):
    parsed = None
  if parsed is None:  # find and name the first bad prediction
    for vid, preds in results.items():
      for j, pred in enumerate(preds):
        problem = _prediction_problem(pred)
        if problem:
          raise InputError(f'{source}: results[{vid!r}][{j}]{problem}')
    raise InputError(f'{source}: malformed results')  # unreachable while both paths agree
  scores_arr, segments = parsed

  label_index = {n: i for i, n in enumerate(dict.fromkeys(labels))}
  offsets = np.zeros(len(video_ids) + 1, np.int64)
  np.cumsum(counts, out=offsets[1:])
  return Proposals(
      video_ids=tuple(video_ids), video_offsets=offsets,
      video=np.repeat(np.arange(len(video_ids), dtype=np.int64), counts),
      label_names=tuple(label_index),
      label=np.fromiter(map(label_index.__getitem__, labels), np.int64, count=m),
      scores=scores_arr, segments=segments, source=source)


def load_proposals(source: str | os.PathLike[str] | Mapping[str, Any]) -> Proposals:
  """Reads an ActivityNet result file {"version", "results": {...}, "external_data"}.

  Only "results" is required. Raises InputError on any malformed content (see validate_results).
  """
  with _gc_paused():
    results, name = _top_level(source, 'results')
    return validate_results(results, source=name)


def write_proposals(path: str | os.PathLike[str],
                    results: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    version: str = 'VERSION 1.3',
                    external_data: Mapping[str, Any] | None = None) -> int:
  """Validates and writes proposals as an ActivityNet result file, atomically.

  Args:
    path: output file.
    results: {video_id: [{"label": str, "score": number, "segment": [start_s, end_s]}, ...]};
      NumPy scalars are fine. Videos keep their order, predictions their list order (the order
      that breaks score ties, see aumn_jax/evaluation.py).
    version: the format's "version" field.
    external_data: the format's "external_data" field ({} by default).

  Returns:
    Number of predictions written.

  Raises:
    InputError: invalid results (nothing is written) or an unwritable path.
  """
  props = validate_results(results, source=os.fspath(path))
  label_names = props.label_names
  out: dict[str, list[dict[str, Any]]] = {}
  for v, vid in enumerate(props.video_ids):
    lo, hi = props.video_offsets[v], props.video_offsets[v + 1]
    out[vid] = [{'label': label_names[l], 'score': s, 'segment': [a, b]}
                for l, s, (a, b) in zip(props.label[lo:hi].tolist(), props.scores[lo:hi].tolist(),
                                        props.segments[lo:hi].tolist())]
  write_json(path, {'version': version, 'results': out,
                    'external_data': dict(external_data or {})})
  return len(props)


# ---------------------------------------------------------------------------------------------
# Ambiguous segments (THUMOS14 Ambiguous_test.txt).


def load_ambiguous(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Reads 'video_id start end' lines (any whitespace; blank lines skipped).

  Args:
    source: the file, or a mapping {video_id: [[start, end], ...]}.

  Returns:
    {video_id: float64 [A, 2]}.

  Raises:
    InputError: naming file:line for a malformed line or segment.
  """
  out: dict[str, list[tuple[float, float]]] = {}
  if isinstance(source, Mapping):
    for vid, segs in source.items():
      if isinstance(segs, np.ndarray):   # e.g. load_ambiguous's own output
        segs = segs.tolist()
      for j, seg in enumerate(segs):
        problem = _segment_problem(seg, strings=False)
        if problem:
          raise InputError(f'ambiguous[{vid!r}][{j}]: {problem}')
        out.setdefault(vid, []).append((float(seg[0]), float(seg[1])))
  else:
    name = os.fspath(source)
    try:
      with open(name, encoding='utf-8') as f:
        lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
      raise InputError(f'{name}: cannot read: {getattr(e, "strerror", None) or e}') from None
    for lineno, line in enumerate(lines, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 3:
        raise InputError(f'{name}:{lineno}: expected "video_id start end", got {line.strip()!r}')
      problem = _segment_problem(fields[1:])
      if problem:
        raise InputError(f'{name}:{lineno}: {problem}')
      out.setdefault(fields[0], []).append((float(fields[1]), float(fields[2])))
  return {vid: np.asarray(segs, np.float64).reshape(-1, 2) for vid, segs in out.items()}
