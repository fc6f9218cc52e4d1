"""Reading and writing 8-bit RGB images, with a clear policy for other modes.

Accepted: RGB; grayscale ("L", "1") and palette ("P") images are converted to RGB
(grayscale becomes three equal channels); an alpha channel ("RGBA", "LA", "PA") is
dropped, since the codec codes colour only. Refused: 16-bit, 32-bit integer and float
images ("I;16", "I", "F") and CMYK, which would lose precision or colour silently.
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from msinn_jax.errors import UserError

# File name extensions the tools take for images (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def list_images(folder: str | os.PathLike) -> list[pathlib.Path]:
  """The files under `folder` (recursively) with an image extension, sorted by path.

  The one folder scan of every tool: training, `msinn eval` and `check-invertibility`
  see the same images.
  """
  return sorted(p for p in pathlib.Path(folder).rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
ACCEPTED_MODES = ("RGB", "RGBA", "L", "LA", "1", "P", "PA")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as [H, W, 3] uint8 (see the module docstring for modes)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f"no such image file: {path}")
  try:
    with Image.open(path) as img:
      img.load()
      mode = img.mode
      if mode not in ACCEPTED_MODES:
        raise UserError(f"{path}: image mode {mode!r} is not supported; the codec takes 8-bit "
                        f"RGB, grayscale or palette images (alpha is dropped)")
      if "A" in mode:
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
      return np.asarray(img.convert("RGB"), dtype=np.uint8)
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise UserError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
  """Writes [H, W, 3] uint8 as PNG, atomically (a partial file never replaces a good one)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(rgb, np.uint8), "RGB").save(buf, format="PNG")
  write_bytes(path, buf.getvalue())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes a file atomically."""
  path = os.fspath(path)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:
    raise UserError(f"cannot write {path}: {e}") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_bytes(path: str | os.PathLike) -> bytes:
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise UserError(f"no such file: {path}")
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e}") from None
