"""Training input pipeline: random crops of an image collection as uint8 NHWC batches.

MSINN is trained on random 256 x 256 crops of Flickr2W (paper Sec. V-A; the official
`train.py` uses torchvision's `RandomCrop` over CompressAI's `ImageFolder`, no flips).
This module reproduces that on the host, without TensorFlow:

  source[i] -> [H, W, 3] uint8  (ImageFolderSource, TfdsSource: random access)
  CropLoader.batch_at(step) -> [host_batch, crop, crop, 3] uint8  (pure function)
  CropLoader.iterator(step) -> BatchIterator  (prefetching, state()/restore())

Determinism and resume. Every example of the infinite stream has a global *position*
`p = step * global_batch_size + j`. Position `p` reads record `perm(seed, epoch)[p % N]`
with `epoch = p // N` (a fresh seeded permutation per epoch, so every record is seen once
per epoch and epochs may straddle batches), and draws its crop offset and flip from a
NumPy generator seeded by `(seed, p)`. A batch is therefore a pure function of
`(seed, step)`, and the whole data state is the number of batches consumed: restoring
`{"step": n}` reproduces exactly what an uninterrupted run would have seen, independently
of prefetch depth, worker threads or the number of hosts.

Per-host sharding. Host `k` of `K` reads the contiguous slice
`[k * host_batch, (k + 1) * host_batch)` of every global batch. With a mesh built over
`jax.devices()` (devices ordered by process), that slice is exactly what
`jax.make_array_from_process_local_data` expects from host `k` (see `train/mesh.py`).

Images smaller than the crop are padded by reflection (mirror without repeating the
edge pixel, `numpy.pad(mode="reflect")`, repeated as often as needed; a 1-pixel side
is repeated), centred, before cropping, so no image is ever rejected for its size.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import pathlib
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import jax
import numpy as np
from PIL import Image

from msinn_jax.errors import UserError
from msinn_jax.image_io import (DECODE_ERRORS, IMAGE_EXTENSIONS, list_images, read_rgb,
                                to_rgb_uint8)

T = TypeVar("T")


# How many following records a loader tries when a record fails to decode.
_MAX_DECODE_FALLBACKS = 16


class ImageSource(Protocol):
  """A random-access collection of RGB images; must be safe to read from several threads."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> np.ndarray:
    """Returns image `index` as [H, W, 3] uint8."""
    ...


class ImageFolderSource:
  """All images under a folder (recursively), sorted by relative path.

  Files are recognized by extension (`IMAGE_EXTENSIONS`, case-insensitive). Strict
  sources (the default: evaluation, where a result over fewer images than asked would
  mislead) hold every such file and read like the codec (`image_io.read_rgb`: any failure
  is a `UserError`). Lenient ones (training) skip, with a warning, the files whose header
  PIL cannot parse at scan time, convert more modes (`image_io.to_rgb_uint8`), and leave
  damage beyond the header, found only when decoding, to `CropLoader`, which skips the
  record.
  """

  def __init__(self, root: str | os.PathLike[str], *, lenient: bool = False):
    """Scans `root`.

    Args:
      root: folder to scan recursively (e.g. `flickr2w/train`).
      lenient: also take 16-bit and other modes (`image_io.to_rgb_uint8`).

    Raises:
      UserError: `root` is not a folder or holds no (lenient: no readable) image.
    """
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise UserError(f"image folder {str(self.root)!r} does not exist or is not a folder")
    paths = []
    for path in list_images(self.root):
      if lenient:
        try:
          with Image.open(path):  # Parses the header; decodes nothing.
            pass
        except DECODE_ERRORS as e:
          warnings.warn(f"skipping unreadable image {str(path)!r}: {e}", stacklevel=2)
          continue
      paths.append(path)
    if not paths:
      raise UserError(
          f"no readable image ({', '.join(IMAGE_EXTENSIONS)}) under {str(self.root)!r}")
    self.paths: tuple[pathlib.Path, ...] = tuple(paths)
    self.lenient = lenient

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> np.ndarray:
    if not self.lenient:
      return read_rgb(self.paths[index])  # The codec's reading: every failure a UserError.
    with Image.open(self.paths[index]) as image:  # Decode errors reach CropLoader's fallback.
      return to_rgb_uint8(image, lenient=True)

  def describe(self, index: int) -> str:
    """Names record `index` in messages."""
    return str(self.paths[index])


class TfdsSource:
  """One image feature of a TFDS dataset, read by random access without TensorFlow.

  Uses `tfds.data_source`, which needs the dataset prepared in `array_record` format,
  e.g. `tfds.builder("clic", file_format="array_record").download_and_prepare()`.
  """

  # Feature names tried in order when `image_key` is not given (`clic`: image, `div2k`: hr).
  DEFAULT_IMAGE_KEYS = ("image", "hr")

  def __init__(self,
               name: str,
               *,
               split: str = "train",
               image_key: str | None = None,
               data_dir: str | os.PathLike[str] | None = None,
               download: bool = False):
    """Opens the data source.

    Args:
      name: TFDS dataset name, optionally with config/version (`"clic"`, `"div2k/bicubic_x2"`).
      split: TFDS split spec.
      image_key: name of the image feature; by default the first of `DEFAULT_IMAGE_KEYS`
        present, or the only image feature.
      data_dir: TFDS data directory (default: TFDS's own default).
      download: whether to download and prepare the dataset if missing. Off by default so
        that a typo never starts a multi-gigabyte download.

    Raises:
      UserError: the dataset is unknown, not prepared in a random-access format, or has no
        suitable image feature.
    """
    try:
      import tensorflow_datasets as tfds  # Optional dependency, only needed here.
    except ImportError:
      raise UserError("TFDS datasets need tensorflow-datasets: pip install "
                      "'msinn-jax[tfds]'") from None

    self.name = name
    try:
      self._source = tfds.data_source(
          name, split=split, data_dir=None if data_dir is None else os.fspath(data_dir),
          download=download)
    except (ValueError, NotImplementedError, AssertionError, OSError) as e:
      raise UserError(f"cannot open TFDS dataset {name!r} split {split!r}: "
                      f"{str(e).splitlines()[0]}") from e
    features = self._source.dataset_info.features
    image_keys = [k for k in features.keys()
                  if isinstance(features[k], tfds.features.Image)]
    if image_key is None:
      preferred = [k for k in self.DEFAULT_IMAGE_KEYS if k in image_keys]
      if preferred:
        image_key = preferred[0]
      elif len(image_keys) == 1:
        image_key = image_keys[0]
    if image_key is None or image_key not in image_keys:
      raise UserError(f"TFDS dataset {name!r} has image features {image_keys}; "
                      f"pick one with image_key (got {image_key!r})")
    self.image_key = image_key
    if len(self._source) == 0:
      raise UserError(f"TFDS dataset {name!r} split {split!r} is empty")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> np.ndarray:
    image = np.asarray(self._source[index][self.image_key])
    if image.dtype != np.uint8:
      raise UserError(f"{self.describe(index)}: {image.dtype} pixels; the codec takes 8-bit "
                      f"images (uint8)")
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    return image[..., :3]

  def describe(self, index: int) -> str:
    """Names record `index` in messages."""
    return f"{self.name}[{index}]"


def pad_to_size(image: np.ndarray, size: int) -> np.ndarray:
  """Reflect-pads `image` ([H, W, C]) to at least `size` x `size`, centred."""
  h, w = image.shape[:2]
  pad_h, pad_w = max(size - h, 0), max(size - w, 0)
  if not pad_h and not pad_w:
    return image
  widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
  return np.pad(image, widths, mode="reflect")


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                flip: bool = False) -> np.ndarray:
  """A uniformly placed `size` x `size` crop, optionally flipped left-right with p=0.5.

  The flip coin is drawn whether or not `flip` is set, so crop positions do not depend
  on `flip`.

  Args:
    image: [H, W, C] array; reflect-padded first if smaller than `size`.
    size: crop side.
    rng: source of the offsets and the flip coin.
    flip: whether to apply the random horizontal flip.

  Returns:
    [size, size, C] array, contiguous.
  """
  image = pad_to_size(image, size)
  h, w = image.shape[:2]
  top = int(rng.integers(0, h - size + 1))
  left = int(rng.integers(0, w - size + 1))
  flip_coin = bool(rng.integers(0, 2))
  crop = image[top:top + size, left:left + size]
  if flip and flip_coin:
    crop = crop[:, ::-1]
  return np.ascontiguousarray(crop)


def global_batch_size_for(per_device_batch_size: int, device_count: int | None = None) -> int:
  """`per_device_batch_size` times the global device count (default `jax.device_count()`)."""
  return per_device_batch_size * (jax.device_count() if device_count is None else device_count)


class CropLoader:
  """Deterministic random crops of an `ImageSource`, sharded across hosts.

  See the module docstring for how positions map to records and crops.
  """

  def __init__(self,
               source: ImageSource,
               *,
               global_batch_size: int,
               crop_size: int = 256,
               seed: int = 0,
               flip: bool = False,
               process_index: int | None = None,
               process_count: int | None = None):
    """Creates the loader.

    Args:
      source: the images.
      global_batch_size: examples per step over all hosts (per-device batch x device count).
      crop_size: side of the square crops (paper: 256).
      seed: non-negative data seed; with the step, it determines every batch.
      flip: random horizontal flips (the official code uses none).
      process_index: this host's index (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).

    Raises:
      ValueError: inconsistent sizes or indices.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size <= 0 or crop_size <= 0 or seed < 0:
      raise ValueError(f"need positive global_batch_size and crop_size and a non-negative seed, "
                       f"got {global_batch_size}, {crop_size}, {seed}")
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} not divisible by "
                       f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    self.source = source
    self.num_examples = len(source)
    self.global_batch_size = global_batch_size
    self.host_batch_size = global_batch_size // process_count
    self.crop_size = crop_size
    self.seed = seed
    self.flip = flip
    self.process_index = process_index
    self.process_count = process_count
    self._perm_cache: dict[int, np.ndarray] = {}
    self._perm_lock = threading.Lock()

  def _permutation(self, epoch: int) -> np.ndarray:
    with self._perm_lock:
      perm = self._perm_cache.get(epoch)
      if perm is None:
        perm = np.random.default_rng([self.seed, 0, epoch]).permutation(self.num_examples)
        # Positions only move forward (a few epochs in flight at most).
        self._perm_cache = {e: p for e, p in self._perm_cache.items() if e >= epoch - 1}
        self._perm_cache[epoch] = perm
      return perm

  def record_at(self, position: int) -> int:
    """Index into `source` read at global stream position `position`."""
    epoch, offset = divmod(position, self.num_examples)
    return int(self._permutation(epoch)[offset])

  def example_at(self, position: int) -> np.ndarray:
    """The crop at global stream position `position`: [crop, crop, 3] uint8.

    A record that fails to decode is replaced by the next record(s) of the source, with
    a warning; this keeps the stream deterministic.

    Raises:
      UserError: `_MAX_DECODE_FALLBACKS` consecutive records failed to decode.
    """
    record = self.record_at(position)
    for attempt in range(min(_MAX_DECODE_FALLBACKS, self.num_examples)):
      index = (record + attempt) % self.num_examples
      try:
        image = self.source[index]
        break
      except DECODE_ERRORS as e:
        name = getattr(self.source, "describe", str)(index)
        warnings.warn(f"cannot decode {name}: {e}; using the next record", stacklevel=2)
    else:
      raise UserError(f"{_MAX_DECODE_FALLBACKS} consecutive records from {record} failed "
                      f"to decode")
    rng = np.random.default_rng([self.seed, 1, position])
    return random_crop(image, self.crop_size, rng, flip=self.flip)

  def batch_at(self, step: int,
               executor: concurrent.futures.Executor | None = None) -> np.ndarray:
    """This host's slice of global batch `step`: [host_batch, crop, crop, 3] uint8.

    Args:
      step: batch index, from 0.
      executor: decodes the examples in parallel if given (PIL releases the GIL).

    Returns:
      Rows `[process_index * host_batch, (process_index + 1) * host_batch)` of the
      global batch.
    """
    if step < 0:
      raise ValueError(f"step must be non-negative, got {step}")
    start = step * self.global_batch_size + self.process_index * self.host_batch_size
    positions = range(start, start + self.host_batch_size)
    if executor is None:
      examples = [self.example_at(p) for p in positions]
    else:
      examples = list(executor.map(self.example_at, positions))
    return np.stack(examples)

  def iterator(self, step: int = 0, *, prefetch: int = 2, num_workers: int = 4) -> BatchIterator:
    """An endless iterator over `batch_at(step)`, `batch_at(step + 1)`, ...

    Args:
      step: first batch.
      prefetch: batches prepared ahead by a background thread (0: none, synchronous).
      num_workers: decoding threads per batch (1: decode on the prefetch thread).
    """
    return BatchIterator(self, step, prefetch=prefetch, num_workers=num_workers)

  def state(self, step: int) -> dict[str, int]:
    """The data state to checkpoint when the next batch to read is `step`."""
    return {"step": step, "seed": self.seed, "global_batch_size": self.global_batch_size,
            "num_examples": self.num_examples}

  def check_state(self, state: Mapping[str, Any]) -> int:
    """Validates a state from `state()` against this loader; returns its step.

    Raises:
      UserError: the state comes from a different seed, batch size or dataset, so the
        batches would not continue the interrupted run.
    """
    for key in ("seed", "global_batch_size", "num_examples"):
      if key in state and int(state[key]) != getattr(self, key):
        raise UserError(f"cannot resume the data stream: checkpoint has {key}={int(state[key])}"
                        f", this loader {getattr(self, key)}")
    return int(state["step"])


class Prefetcher(Iterator[T]):
  """Runs an iterator on a background thread, `buffer_size` items ahead.

  An exception raised by the wrapped iterator is re-raised by `__next__` on the
  consumer's thread (with its traceback). `close()` stops and joins the thread; use the
  prefetcher as a context manager to make that automatic.
  """

  def __init__(self, iterable: Iterable[T], buffer_size: int = 2):
    """Starts the background thread.

    Args:
      iterable: items to produce; iterated on the background thread only.
      buffer_size: most items held ready at once (>= 1).
    """
    if buffer_size < 1:
      raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=buffer_size)
    self._stop = threading.Event()
    self._finished = False
    self._thread = threading.Thread(
        target=self._work, args=(iterable,), name="msinn-prefetch", daemon=True)
    self._thread.start()

  def _put(self, message: tuple[str, Any]) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(message, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def _work(self, iterable: Iterable[T]) -> None:
    try:
      for item in iterable:
        if not self._put(("item", item)):
          return
      self._put(("end", None))
    except BaseException as e:  # Handed to the consumer, not swallowed.
      self._put(("error", e))

  def __next__(self) -> T:
    if self._finished:
      raise StopIteration
    while True:
      try:
        kind, value = self._queue.get(timeout=0.5)
        break
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          self._finished = True
          raise RuntimeError("prefetch thread stopped without a result") from None
    if kind == "item":
      return value
    self._finished = True
    self._thread.join()
    if kind == "error":
      raise value
    raise StopIteration

  def close(self) -> None:
    """Stops the background thread and waits for it (at most one item's work)."""
    self._stop.set()
    self._finished = True
    while True:  # Unblock a producer waiting on a full queue.
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join()

  def __enter__(self) -> Prefetcher[T]:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()


class BatchIterator(Iterator[np.ndarray]):
  """Endless, resumable iterator over a `CropLoader`'s batches.

  `state()` is the position of the *consumer* (batches returned so far), whatever the
  prefetch thread has prepared, so it is safe to checkpoint at any time.
  """

  def __init__(self, loader: CropLoader, step: int = 0, *, prefetch: int = 2,
               num_workers: int = 4):
    """Starts reading at batch `step`; see `CropLoader.iterator` for the arguments."""
    self.loader = loader
    self._prefetch = prefetch
    self._executor = (concurrent.futures.ThreadPoolExecutor(
        num_workers, thread_name_prefix="msinn-decode") if num_workers > 1 else None)
    self._step = step
    self._source: Iterator[np.ndarray] | None = None
    self._start(step)

  def _start(self, step: int) -> None:
    self._step = step
    batches = (self.loader.batch_at(s, self._executor) for s in itertools.count(step))
    self._source = Prefetcher(batches, self._prefetch) if self._prefetch > 0 else batches

  def _stop(self) -> None:
    if isinstance(self._source, Prefetcher):
      self._source.close()
    self._source = None

  @property
  def step(self) -> int:
    """Index of the next batch `__next__` returns."""
    return self._step

  def __next__(self) -> np.ndarray:
    if self._source is None:
      raise RuntimeError("BatchIterator is closed")
    batch = next(self._source)
    self._step += 1
    return batch

  def state(self) -> dict[str, int]:
    """Checkpointable state: see `CropLoader.state`."""
    return self.loader.state(self._step)

  def restore(self, state: Mapping[str, Any]) -> None:
    """Continues from a `state()`: the next batch is the one that state would have read."""
    step = self.loader.check_state(state)
    self._stop()
    self._start(step)

  def close(self) -> None:
    """Stops the prefetch and decoding threads."""
    self._stop()
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor = None

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
