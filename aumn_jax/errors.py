"""The user-error types: mistakes a user can fix, reported as one line, never a traceback.

Every entry point (aumn_jax.cli.run) prints a `UserError` as `error: <message>` and exits 1;
anything else is a bug: one line too, its traceback in W/errors.log (cli.py). Plain Python:
the NumPy-only evaluator path imports this without JAX.
"""


class UserError(Exception):
  """A mistake the user can fix; str(error) is one line naming the file or key and the problem."""


class TrainingError(UserError, RuntimeError):
  """A run that cannot go on (bad config, diverged, a workdir of another run)."""
