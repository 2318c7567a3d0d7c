"""The errors whose message is the whole story: printed as one message, never as a traceback.

`UserInputError`: the error a user can fix: a wrong config value, flag, or input file.

Raised with a message that names what is wrong (the config field, the file and line, ...), the
value found and what is accepted. The command-line entry points (`iah_jax.cli.run`) print such an
error as one message on stderr and exit with code 2, without a traceback; every other exception is
a bug and keeps its traceback. It is a ValueError, so code that catches ValueError still does.

`RunError`: a run stopped for a reason its message explains and says what to do about (a
non-finite loss, no intact checkpoint); `iah_jax.cli.run` prints it the same way.

Kept apart from `iah_jax.cli` so that the data and model modules can raise it without depending on
the command-line machinery.
"""


class UserInputError(ValueError):
  """A mistake in the user's input (config, flags, data files); the message says how to fix it."""


class RunError(RuntimeError):
  """Training or restoring stopped for a reason the message explains (and says what to do)."""
