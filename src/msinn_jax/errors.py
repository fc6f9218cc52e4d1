"""Errors a user of the codec can cause, reported as one line by the CLI."""


class UserError(Exception):
  """Bad input from the user: a missing or unreadable file, a bad argument."""


class BitstreamError(UserError, ValueError):
  """A `.msinn` stream that is truncated, corrupt, or made by another model/format."""


class CheckpointError(UserError, ValueError):
  """A checkpoint that does not match the model: missing, unexpected or misshapen keys."""
