"""Errors the CLI reports as one line: those a user can cause (exit 2), and a failed
decode check (exit 1)."""


class UserError(Exception):
  """Bad input from the user: a missing or unreadable file, a bad argument."""


class BitstreamError(UserError, ValueError):
  """A `.msinn` stream that is truncated, corrupt, or made by another model/format."""


class CheckpointError(UserError, ValueError):
  """A checkpoint that does not match the model: missing, unexpected or misshapen keys."""


class DecodeMismatchError(RuntimeError):
  """The decoder's image differs from the encoder's reconstruction (a codec bug, or a
  decoder on another kind of device)."""
