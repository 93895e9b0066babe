"""The one wrapper every command-line entry point runs under (train.py, evaluate.py, benchmarks).

Two rules. `run(main)` is absl's app.run where a mistake on the command line (an unknown flag,
a typo'd `--config.KEY`, a bad value) is one line and exit status 2. `@user_errors` on `main`
does the same for an `app.UsageError` main raises (a flag value it checks itself), turns an
`errors.UserError` into one line `error: <message>` and exit status 1, and Ctrl-C
into `error: interrupted`, status 130. Anything else is a bug: one line first (`error:
unexpected ...`, exit 1), its traceback appended to W/errors.log (or a temp file).
Imports no JAX (evaluate.py's file mode is NumPy only).
"""
import errno
import functools
import os
import sys
import tempfile
import traceback
from typing import Callable, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from aumn_jax import errors

_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def fail(message: str, status: int = 1) -> None:
  """Prints `error: message` on stderr and exits with `status`."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl flag parsing, with command-line mistakes (a typo'd config key) as one line."""
  try:
    remaining = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e)
    if len(message) > 1 and message[0] == message[-1] == "'":  # a repr'd KeyError inside
      message = message[1:-1]
    message = ' '.join(message.replace('\\n', ' ').replace("\\'", "'").split())
    fail(f'bad command line: {message}', status=2)
  _check_config_files()
  return remaining


def _check_config_files() -> None:
  """A --config file that does not load is one line (ml_collections defers it to first use)."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if not flag.present:
      continue
    try:
      path = config_flags.get_config_filename(flag)  # TypeError: not a config-file flag
    except TypeError:
      continue
    try:
      flag.value.keys  # pylint: disable=pointless-statement  (a failed load raises on access)
    except OSError:
      known = sorted(f for f in os.listdir(_CONFIGS) if f.endswith('.py') and f[0] != '_')
      fail(f'--{name}={path}: cannot load this config file (no such file, or it fails on '
           f'import); the configs are {", ".join("configs/" + f for f in known)}', status=2)


# OSErrors that say what the machine lacks, not what the code did wrong.
_MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def user_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """Decorates an entry point's main: an errors.UserError becomes `error: ...`, exit 1."""

  @functools.wraps(main)
  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:  # a flag value main itself checks: the command line's mistake
      fail(f'bad command line: {" ".join(str(e).split())}', status=2)
    except errors.UserError as e:
      fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C outside a training loop, or a second one inside it
      fail('interrupted', status=130)
    except OSError as e:
      if e.errno not in _MACHINE_ERRNOS:
        _fail_unexpected(e)
      # The machine, not the code: a full disk, a read-only or forbidden directory. What was
      # written is whole (atomic writes, checkpoints): rerunning the same command resumes.
      fail(f'{e.filename or "a file"}: {e.strerror}; fix that and rerun the same command '
           '(a run resumes from its last checkpoint)')
    except Exception as e:  # pylint: disable=broad-except  (a bug: the line first, then a file)
      _fail_unexpected(e)

  return guarded


def _fail_unexpected(e: BaseException) -> None:
  """A bug: one line, the traceback in a file (_write_traceback); exits 1."""
  path = _write_traceback()
  detail = ' '.join(str(e).split())[:300]
  fail(f'unexpected {type(e).__name__}: {detail} (a bug, not your input; the traceback '
       f'is in {path})')


def _write_traceback() -> str:
  """Appends the current exception's traceback to W/errors.log (W = --workdir, when the command
  has one and it exists), else to a file in the temp dir; returns the path."""
  workdir = None
  if 'workdir' in flags.FLAGS and flags.FLAGS.is_parsed() and flags.FLAGS.workdir:
    workdir = os.path.expanduser(flags.FLAGS.workdir)
  if workdir and os.path.isdir(workdir):
    path = os.path.join(workdir, 'errors.log')
  else:
    path = os.path.join(tempfile.gettempdir(), f'aumn_jax_error_{os.getpid()}.log')
  try:
    with open(path, 'a', encoding='utf-8') as f:
      f.write(f'--- {" ".join(sys.argv)}\n')
      traceback.print_exc(file=f)
  except OSError:  # nowhere to write it (a full disk): stderr keeps it
    traceback.print_exc()
    return 'the lines above'
  return path


def define_compilation_cache_flag() -> flags.FlagHolder:
  """--compilation_cache for train.py and evaluate.py (parallel.enable_compilation_cache)."""
  return flags.DEFINE_string(
      'compilation_cache', '~/.cache/aumn_jax/xla',
      'JAX persistent compilation cache directory: reruns, resumes and evaluate.py load the '
      'compiled steps instead of compiling again ("" turns it off).')


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with command-line mistakes as one line (see the module docstring)."""
  app.run(main, flags_parser=parse_flags)
