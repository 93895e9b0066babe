"""The one atomic file write: a reader, or a crash, sees the old file or the whole new one.

Every file a run or a converter writes whole (config.json, results.json, proposals, the
metrics log when it is truncated on resume, converted annotation files) goes through
`write_atomic`. Plain Python: the NumPy-only evaluator path imports it without JAX.
"""
import contextlib
import os
import uuid


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file renamed over it.

  The temporary file sits in the same directory (os.replace is atomic within a file system)
  and is created with open(..., 'x') rather than mkstemp so it gets the usual umask
  permissions. On any failure it is removed and the old `path`, if any, is untouched.

  Raises:
    OSError: the file cannot be written (the caller names it in its one-line error).
  """
  name = os.fspath(path)
  tmp = os.path.join(os.path.dirname(os.path.abspath(name)),
                     f'.{os.path.basename(name)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
  try:
    with open(tmp, 'x', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, name)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
