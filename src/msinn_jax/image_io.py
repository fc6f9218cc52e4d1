"""Reading and writing 8-bit RGB images, with one policy for other modes.

Strict (the default: what is compressed or evaluated): RGB; grayscale ("L", "1") and
palette ("P") images are converted to RGB (grayscale becomes three equal channels); an
alpha channel ("RGBA", "LA", "PA") is dropped, since the codec codes colour only.
Refused: 16-bit, 32-bit integer and float images ("I;16", "I", "F"; also 16 bits per
channel RGB(A), which PIL opens as 8-bit "RGB" by dropping the low byte) and CMYK, which
would lose precision or colour silently. Lenient (training crops, where an approximation costs
nothing): 16-bit grayscale is reduced to 8 bits by dropping the low byte instead of being
clipped at 255, and any other mode is converted by PIL.
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings

import numpy as np
from PIL import Image

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

# What PIL raises for a file it cannot identify or decode: UnidentifiedImageError is an
# OSError; some truncated files raise SyntaxError or ValueError from the plugin parsers;
# an image over PIL's pixel limit raises DecompressionBombError.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def to_rgb_uint8(image: Image.Image, *, lenient: bool = False) -> np.ndarray:
  """A PIL image as [H, W, 3] uint8 RGB, under the module's strict or lenient policy.

  Raises:
    UserError: (strict only) a mode the codec does not take.
  """
  mode = image.mode
  if lenient and (mode.startswith("I;16") or mode == "I"):
    x = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
    return np.repeat(x.astype(np.uint8)[..., None], 3, axis=-1)
  if not lenient and mode not in ACCEPTED_MODES:
    raise UserError(f"image mode {mode!r} is not supported; the codec takes 8-bit RGB, "
                    f"grayscale or palette images (alpha is dropped)")
  return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _bits_per_channel_over_8(image: Image.Image) -> bool:
  """Whether the file stores more than 8 bits per channel though PIL's mode says 8 (a
  48-bit PNG or TIFF opens as "RGB"): its raw mode, e.g. "RGB;16B", says so. Call before
  `load()`, which forgets it."""
  for tile in getattr(image, "tile", None) or ():
    raw = tile.args if isinstance(tile.args, str) else (tile.args or ("",))[0]
    # ";16" plus a byte order (B, L, N). Not "BGR;16": a BMP's 5-6-5 bits, under 8.
    if isinstance(raw, str) and raw[-4:] in (";16B", ";16L", ";16N"):
      return True
  return False


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Reads an image file as [H, W, 3] uint8 under the strict policy (module docstring).

  Raises:
    UserError: no such file, not an image, or a mode the codec does not take.
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    raise UserError(f"{path} is a folder; give an image file")
  if not os.path.isfile(path):
    raise UserError(f"no such image file: {path}")
  try:
    with Image.open(path) as img:
      if img.mode in ACCEPTED_MODES and _bits_per_channel_over_8(img):
        raise UserError(f"{img.mode} with 16 bits per channel is not supported; the codec "
                        "takes 8 bits per channel: convert the image first")
      img.load()
      if "A" in img.mode:
        warnings.warn(f"{path}: alpha channel dropped", stacklevel=2)
      return to_rgb_uint8(img)
  except UserError as e:
    raise UserError(f"{path}: {e}") from None
  except DECODE_ERRORS as e:
    raise UserError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from None


# The formats a decoded image is written in, by extension: lossless ones only, so that
# the file holds exactly what the decoder produced.
OUTPUT_FORMATS = {".png": "PNG", ".ppm": "PPM", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def output_format(path: str | os.PathLike) -> str:
  """The PIL format `write_image` uses for `path`, from its extension.

  Called before any work whose result would go to `path`, so that a name the tools
  cannot write is refused at once.

  Raises:
    UserError: an extension that is not a lossless format (a .jpg would code the decoded
      image a second time, lossily).
  """
  suffix = pathlib.Path(path).suffix.lower()
  if suffix not in OUTPUT_FORMATS:
    raise UserError(f"cannot write {os.fspath(path)}: decoded images are written losslessly "
                    f"as {', '.join(OUTPUT_FORMATS)}; give one of these extensions")
  return OUTPUT_FORMATS[suffix]


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
  """Writes [H, W, 3] uint8 in the lossless format named by the extension (`output_format`),
  atomically (a partial file never replaces a good one)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(rgb, np.uint8), "RGB").save(buf, format=output_format(path))
  write_bytes(path, buf.getvalue())


def check_writable(path: str | os.PathLike, *, inputs: tuple[str | os.PathLike, ...] = ()
                   ) -> None:
  """Refuses, before any work, an output file `write_bytes` could not write or should not.

  Raises:
    UserError: its folder does not exist or cannot be written, it is a folder, or it is
      one of the command's `inputs` (writing it would destroy what is being read).
  """
  path = pathlib.Path(path)
  folder = path.parent
  if path.is_dir():
    raise UserError(f"cannot write {path}: it is a folder; give a file name")
  if not folder.is_dir():
    raise UserError(f"cannot write {path}: no such folder {folder}")
  if not os.access(folder, os.W_OK | os.X_OK):
    raise UserError(f"cannot write {path}: folder {folder} is not writable")
  for source in inputs:
    if path.exists() and os.path.exists(source) and os.path.samefile(path, source):
      raise UserError(f"cannot write {path}: it is the input {os.fspath(source)}; "
                      "give another output name")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes a file atomically."""
  path = os.fspath(path)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except OSError as e:
    raise UserError(f"cannot write {path}: {e.strerror or e}") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_bytes(path: str | os.PathLike) -> bytes:
  path = os.fspath(path)
  if os.path.isdir(path):
    raise UserError(f"{path} is a folder; give a file")
  if not os.path.isfile(path):
    raise UserError(f"no such file: {path}")
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise UserError(f"cannot read {path}: {e}") from None
