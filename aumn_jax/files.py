"""Files shared by processes and crashes: the one atomic write and the one lock.

`write_atomic`: a reader, or a crash, sees the old file or the whole new one. Every file a run
or a converter writes whole (config.json, results.json, proposals, the metrics log when it is
truncated on resume, converted annotation files) goes through it.
`space_shortfall`: whether a directory's file system can take a write of known size (the
converters check before they start, so a full disk fails in a second, not after minutes);
`write_failure`: the one-line reason when a write fails anyway.
`exclusive_lock`: an advisory lock held for a block (a run's workdir, a dataset being
generated), released on any exit, a kill included: the kernel drops it with the process.
Plain Python: the NumPy-only evaluator path imports this without JAX.
"""
import contextlib
import fcntl
import os
import shutil
from typing import Iterator
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


_SLACK = 16 * 2**20


def _free_bytes(directory: str | os.PathLike[str]) -> int:
  d = os.path.abspath(os.fspath(directory))  # the nearest existing parent's file system
  while not os.path.isdir(d) and os.path.dirname(d) != d:
    d = os.path.dirname(d)
  return shutil.disk_usage(d).free


def space_shortfall(directory: str | os.PathLike[str], nbytes: int) -> str | None:
  """None if the file system of `directory` (or of its nearest existing parent) has `nbytes`
  free plus 1 % and 16 MiB of slack; else a phrase for an error line ('needs ... MiB, ...')."""
  free = _free_bytes(directory)
  if free >= nbytes * 1.01 + _SLACK:
    return None
  return (f'needs about {nbytes / 2**20:.0f} MiB and its file system has {free / 2**20:.0f} MiB '
          'free; free some space or choose another directory')


def write_failure(error: BaseException, directory: str | os.PathLike[str]) -> str:
  """One line on why a write into `directory` failed. Call it before cleaning up: some writers
  (NumPy, TFDS) drop the errno, so a file system with almost nothing free is said to be full."""
  why = getattr(error, 'strerror', None) or ' '.join(str(error).split())[:200]
  if _free_bytes(directory) < _SLACK and 'No space left' not in why:
    why += f' (its file system is full: {_free_bytes(directory) / 2**20:.1f} MiB free)'
  return why


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, wait: bool = False) -> Iterator[None]:
  """Holds an exclusive flock on `path` (created if absent) for the block.

  Args:
    path: the lock file.
    wait: block until the holder lets go (else raise at once).

  Raises:
    BlockingIOError: wait=False and another open of `path` holds the lock.
  """
  with open(path, 'a', encoding='utf-8') as f:
    fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
