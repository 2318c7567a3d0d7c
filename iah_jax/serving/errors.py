"""The one error type of the serving commands: a user-facing message, printed without traceback."""

from iah_jax.errors import UserInputError


class ServingError(UserInputError):
  """A problem with the user's input (run directory, images, index, query); the message names
  the thing and says what to do. The command lines (`iah_jax.cli.run`) print it and exit with a
  non-zero code."""
