"""The one wrapper every command-line entry point runs under (train.py, evaluate.py, benchmarks).

Two rules. `run(main)` is absl's app.run where a mistake on the command line (an unknown flag,
a typo'd `--config.KEY`, a bad value, a --config file that does not load: the line names the
argument) is one line and exit status 2. `@user_errors` on `main`
does the same for an `app.UsageError` main raises (a flag value it checks itself), turns an
`errors.UserError` into one line `error: <message>` and exit status 1, and Ctrl-C
into `error: interrupted`, status 130. Anything else is a bug: one line first (`error:
unexpected ...`, exit 1), its traceback appended to W/errors.log (or a temp file).
Imports no JAX (evaluate.py's file mode is NumPy only).
"""
import contextlib
import difflib
import errno
import functools
import logging
import os
import runpy
import sys
import tempfile
import traceback
from typing import Any, Callable, Sequence

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
    with _config_flag_warnings_dropped():  # a config file's fault is our one line below
      remaining = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (each case below is one line)
    # A config file that does not load is the first thing to fix, whatever failed after it.
    paths = dict(_config_file_args(argv))  # (absl: the last --config=PATH wins)
    configs = {name: _check_config_file(name, path) for name, path in paths.items()}
    fail(_unknown_config_field(argv, configs) or f'bad command line: {_one_line(e)}', status=2)
  for name in flags.FLAGS:  # ml_collections defers a config file's IOError to first use
    flag = flags.FLAGS[name]
    if flag.present and _is_config_flag(flag):
      path = config_flags.get_config_filename(flag)
      try:
        if not hasattr(flag.value, 'keys'):
          raise TypeError
      except Exception as e:  # pylint: disable=broad-except  (reloaded below for the cause)
        _check_config_file(name, path)
        fail(f'--{name}={path}: this config file fails to load: {_one_line(e)}', status=2)
  return remaining


@contextlib.contextmanager
def _config_flag_warnings_dropped():
  """Drops ml_collections' log lines while flags parse (e.g. 'get_config() returned None'):
  logged before absl's flags exist, they come with absl's 'Logging before flag parsing' line,
  two lines of noise above the one line parse_flags prints for the same fault."""
  def keep(record: logging.LogRecord) -> bool:
    return record.module != 'config_flags'
  logger = logging.getLogger('absl')
  logger.addFilter(keep)
  try:
    yield
  finally:
    logger.removeFilter(keep)


def _is_config_flag(flag: flags.Flag) -> bool:
  """Whether `flag` is a config_flags.DEFINE_config_file flag (ml_collections exports no test)."""
  try:
    config_flags.get_config_filename(flag)
  except TypeError:
    return False
  except flags.Error:  # a config flag not parsed yet (UnparsedFlagError)
    pass
  return True


def _config_file_args(argv: Sequence[str]) -> list[tuple[str, str]]:
  """[(flag name, path)] of the config-file flags in argv (`--config=PATH` or `--config PATH`,
  also inside a --flagfile)."""
  found = []
  try:
    argv = [argv[0], *flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)]
  except flags.Error:  # an unreadable --flagfile: absl's own message says so
    pass
  for i, arg in enumerate(argv[1:], start=1):
    name, eq, value = arg.lstrip('-').partition('=')
    if (arg.startswith('-') and name in flags.FLAGS
        and _is_config_flag(flags.FLAGS[name])):
      if eq:
        found.append((name, value))
      elif i + 1 < len(argv):
        found.append((name, argv[i + 1]))
  return found


def _check_config_file(name: str, path: str) -> Any:
  """The config --name=PATH[:ARG] loads (get_config([ARG]) of the file at PATH, as
  ml_collections does); exits with one line (status 2) naming the argument when it fails."""
  file, colon, arg = path.partition(':')
  if not os.path.isfile(file):
    known = sorted(f for f in os.listdir(_CONFIGS) if f.endswith('.py') and f[0] != '_')
    why = 'a directory, not a file' if os.path.isdir(file) else 'no such file'
    fail(f'--{name}={path}: cannot load this config file ({why}); the configs are '
         f'{", ".join("configs/" + f for f in known)}', status=2)
  try:
    get_config = runpy.run_path(file).get('get_config')
    if get_config is None:
      raise AttributeError('the file defines no get_config()')
    value = get_config(*([arg] if colon else []))
    if not hasattr(value, 'keys'):
      raise TypeError(f'get_config() returned {type(value).__name__}, not a ConfigDict')
  except Exception as e:  # pylint: disable=broad-except  (a syntax error, get_config raising)
    fail(f'--{name}={path}: this config file fails to load: {type(e).__name__}: '
         f'{_one_line(e)}', status=2)
  return value


def _one_line(e: BaseException) -> str:
  """An exception's message on one line, with the quotes of a repr'd KeyError inside dropped."""
  while e.args and isinstance(e.args[0], BaseException):  # AttributeError(KeyError(message))
    e = e.args[0]
  message = str(e.args[0]) if len(e.args) == 1 else str(e)
  return ' '.join(message.replace('\\n', ' ').replace("\\'", "'").split())


def _unknown_config_field(argv: Sequence[str], configs: dict[str, Any]) -> str | None:
  """`--config.model.nosuch=3: config.model has no field 'nosuch'` for the first --NAME.KEY
  argument whose dotted path the loaded config `configs[NAME]` lacks; None if there is none."""
  for arg in argv[1:]:
    name, _, field = arg.lstrip('-').partition('=')[0].partition('.')
    if not (arg.startswith('-') and field and name in configs):
      continue
    node, parts = configs[name], field.split('.')
    for i, part in enumerate(parts):
      where = '.'.join([name, *parts[:i]])
      if not hasattr(node, 'keys'):
        return f'{arg}: {where} is a {type(node).__name__}, it has no fields'
      if part not in node:
        close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1)
        return (f'{arg}: {where} has no field {part!r}'
                + (f' (did you mean {close[0]!r}?)' if close else ''))
      node = node[part]
  return None


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


def check_output_paths(**paths: str | None) -> None:
  """--json / --markdown: each path's directory exists, checked before the runs (hours) start."""
  for name, path in paths.items():
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
      raise app.UsageError(f'--{name}={path}: its directory does not exist')
    if path and os.path.isdir(path):
      raise app.UsageError(f'--{name}={path}: is a directory, expected a file path')


def define_config_file(name: str, help_text: str) -> flags.FlagHolder:
  """config_flags.DEFINE_config_file(name, None, help_text, lock_config=True). ml_collections
  reads every --flagfile while defining the flag, at import: one that cannot be read is one
  line (status 2) here, where it would be a traceback."""
  try:
    return config_flags.DEFINE_config_file(name, None, help_text, lock_config=True)
  except flags.Error as e:
    args = sys.argv[1:]
    for i, arg in enumerate(args):
      flag, eq, path = arg.lstrip('-').partition('=')
      if not (arg.startswith('-') and flag == 'flagfile'):
        continue
      path = path if eq else (args[i + 1] if i + 1 < len(args) else '')
      if not os.path.isfile(path):
        why = 'a directory, not a file' if os.path.isdir(path) else 'no such file'
        fail(f'--flagfile={path}: cannot read this flag file ({why})', status=2)
    fail(f'bad command line: {_one_line(e)}', status=2)


def define_compilation_cache_flag() -> flags.FlagHolder:
  """--compilation_cache for train.py and evaluate.py (parallel.enable_compilation_cache)."""
  return flags.DEFINE_string(
      'compilation_cache', '~/.cache/aumn_jax/xla',
      'JAX persistent compilation cache directory: reruns, resumes and evaluate.py load the '
      'compiled steps instead of compiling again ("" turns it off).')


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with command-line mistakes as one line (see the module docstring)."""
  app.run(main, flags_parser=parse_flags)
