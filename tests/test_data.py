"""Tests for the training input pipeline (`msinn_jax.train.data`)."""

from __future__ import annotations

import pathlib
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from msinn_jax.errors import UserError
from msinn_jax.image_io import read_rgb
from msinn_jax.train import data

CROP = 16


def _random_image(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
  return rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
  """Seven readable images (one too small, grayscale, RGBA, JPEG, nested) and one corrupt."""
  rng = np.random.default_rng(0)
  Image.fromarray(_random_image(rng, 40, 30, 3)).save(tmp_path / "a.png")
  Image.fromarray(_random_image(rng, 24, 50, 3)).save(tmp_path / "b.PNG")
  Image.fromarray(_random_image(rng, 10, 7, 3)).save(tmp_path / "small.png")
  Image.fromarray(_random_image(rng, 33, 20, 1)[..., 0], mode="L").save(tmp_path / "gray.png")
  Image.fromarray(_random_image(rng, 20, 36, 4), mode="RGBA").save(tmp_path / "rgba.png")
  (tmp_path / "sub").mkdir()
  Image.fromarray(_random_image(rng, 30, 30, 3)).save(tmp_path / "sub" / "c.jpg")
  Image.fromarray(_random_image(rng, 1, 1, 3)).save(tmp_path / "sub" / "pixel.bmp")
  (tmp_path / "corrupt.png").write_bytes(b"this is not an image")
  (tmp_path / "notes.txt").write_text("ignored")
  return tmp_path


@pytest.fixture
def source(folder: pathlib.Path) -> data.ImageFolderSource:
  with pytest.warns(UserWarning, match="corrupt.png"):
    return data.ImageFolderSource(folder, lenient=True)  # As training reads it.


def _loader(source: data.ImageSource, **kwargs) -> data.CropLoader:
  kwargs = {"global_batch_size": 4, "crop_size": CROP, "seed": 3, "process_index": 0,
            "process_count": 1, **kwargs}
  return data.CropLoader(source, **kwargs)


def test_folder_scan_skips_corrupt_and_converts_to_rgb(source):
  names = [p.relative_to(source.root).as_posix() for p in source.paths]
  assert names == ["a.png", "b.PNG", "gray.png", "rgba.png", "small.png", "sub/c.jpg",
                   "sub/pixel.bmp"]
  for i in range(len(source)):
    image = source[i]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
  gray = source[names.index("gray.png")]
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_strict_folders_keep_unreadable_files_and_fail_on_reading_them(folder):
  strict = data.ImageFolderSource(folder)  # As `msinn eval` reads it: nothing skipped.
  names = [p.name for p in strict.paths]
  assert "corrupt.png" in names and "notes.txt" not in names
  with pytest.raises(UserError, match="corrupt.png: not a readable image"):
    strict[names.index("corrupt.png")]


def test_folder_without_images_is_a_user_error(tmp_path):
  (tmp_path / "bad.jpg").write_bytes(b"\x00" * 10)
  with pytest.warns(UserWarning), pytest.raises(UserError, match="no readable image"):
    data.ImageFolderSource(tmp_path, lenient=True)
  with pytest.raises(UserError, match="not a folder"):
    data.ImageFolderSource(tmp_path / "missing")


def test_sixteen_bit_grayscale_keeps_its_range_in_training_and_is_refused_elsewhere(tmp_path):
  x = np.array([[0, 256, 65535]], dtype=np.uint16)
  Image.fromarray(x).save(tmp_path / "deep.png")
  rgb = data.ImageFolderSource(tmp_path, lenient=True)[0]
  np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 255])
  with pytest.raises(UserError, match="deep.png: image mode 'I;16' is not supported"):
    data.ImageFolderSource(tmp_path)[0]


def _png_16_bits_per_channel(path: pathlib.Path, rgb: np.ndarray) -> None:
  """Writes [H, W, 3] uint16 as a 48-bit PNG (PIL writes none): signature, IHDR, IDAT, IEND."""
  h, w, _ = rgb.shape
  rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
  path.write_bytes(b"\x89PNG\r\n\x1a\n"
                   + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                   + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_is_refused_where_pil_would_drop_the_low_byte(tmp_path):
  x = np.array([[[0, 1000, 65535], [258, 2, 40000]]], dtype=np.uint16)
  _png_16_bits_per_channel(tmp_path / "deep.png", x)
  with Image.open(tmp_path / "deep.png") as img:
    assert img.mode == "RGB"  # What PIL reports: nothing in the mode tells.
  with pytest.raises(UserError, match="deep.png: RGB with 16 bits per channel"):
    read_rgb(tmp_path / "deep.png")
  rgb = data.ImageFolderSource(tmp_path, lenient=True)[0]  # Training: the high bytes.
  np.testing.assert_array_equal(rgb, x >> 8)
  Image.fromarray((x >> 8).astype(np.uint8)).save(tmp_path / "eight.png")
  np.testing.assert_array_equal(read_rgb(tmp_path / "eight.png"), x >> 8)


@pytest.mark.parametrize("shape", [(10, 7), (1, 1), (16, 3), (40, 30)])
def test_random_crop_pads_small_images_by_reflection(shape):
  image = np.arange(np.prod(shape) * 3, dtype=np.int64).reshape(*shape, 3)
  crop = data.random_crop(image, CROP, np.random.default_rng(0))
  assert crop.shape == (CROP, CROP, 3)
  if shape == (10, 7):  # Fully padded: rows are centred with 3 mirrored rows above.
    np.testing.assert_array_equal(crop[3:13, 4:11], image)
    np.testing.assert_array_equal(crop[2], image[1, :, :][np.r_[4:0:-1, 0:7, 5:0:-1]][:CROP])


def test_flip_changes_only_orientation():
  image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
  for seed in range(8):
    plain = data.random_crop(image, CROP, np.random.default_rng(seed), flip=False)
    maybe = data.random_crop(image, CROP, np.random.default_rng(seed), flip=True)
    assert (maybe == plain).all() or (maybe == plain[:, ::-1]).all()


def test_batches_are_deterministic_and_cover_epochs(source):
  loader = _loader(source)
  b1 = [loader.batch_at(s) for s in range(4)]
  b2 = [_loader(source).batch_at(s) for s in range(4)]
  for x, y in zip(b1, b2):
    assert x.shape == (4, CROP, CROP, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(b1[0], _loader(source, seed=4).batch_at(0))
  # Each epoch (7 positions) visits each record once.
  n = len(source)
  for epoch in range(3):
    records = [loader.record_at(p) for p in range(epoch * n, (epoch + 1) * n)]
    assert sorted(records) == list(range(n))


@pytest.mark.parametrize("prefetch,num_workers", [(0, 1), (2, 3)])
def test_iterator_resumes_exactly(source, prefetch, num_workers):
  loader = _loader(source)
  with loader.iterator(prefetch=prefetch, num_workers=num_workers) as it:
    uninterrupted = [next(it) for _ in range(6)]
  with loader.iterator(prefetch=prefetch, num_workers=num_workers) as it:
    for _ in range(2):
      next(it)
    state = it.state()
  assert state["step"] == 2
  # A fresh iterator (new process) restored from the state sees batches 2..5.
  with _loader(source).iterator(prefetch=prefetch, num_workers=num_workers) as it:
    next(it)
    it.restore(state)
    resumed = [next(it) for _ in range(4)]
  for x, y in zip(uninterrupted[2:], resumed):
    np.testing.assert_array_equal(x, y)


def test_restore_rejects_a_different_stream(source):
  state = _loader(source).state(5)
  with _loader(source, seed=9).iterator(prefetch=0) as it:
    with pytest.raises(UserError, match="seed"):
      it.restore(state)


def test_hosts_read_disjoint_slices_of_the_global_batch(source):
  whole = _loader(source, global_batch_size=6)
  hosts = [_loader(source, global_batch_size=6, process_index=k, process_count=2)
           for k in range(2)]
  assert hosts[0].host_batch_size == 3
  for step in range(3):
    np.testing.assert_array_equal(
        np.concatenate([h.batch_at(step) for h in hosts]), whole.batch_at(step))
  with pytest.raises(ValueError, match="divisible"):
    _loader(source, global_batch_size=5, process_count=2)


def test_undecodable_record_falls_back_to_the_next_in_training_only(folder):
  lenient = data.ImageFolderSource(folder / "sub", lenient=True)  # As training reads it.
  strict = data.ImageFolderSource(folder / "sub")  # As `msinn eval` reads it.
  truncated = folder / "sub" / "c.jpg"  # Damaged after the scan: found only when decoded.
  truncated.write_bytes(truncated.read_bytes()[:200])
  loader = _loader(lenient, global_batch_size=2)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    batch = loader.batch_at(0)
  assert batch.shape == (2, CROP, CROP, 3)
  assert any("c.jpg" in str(w.message) for w in caught)
  with pytest.raises(UserError, match="c.jpg: not a readable image"):
    strict[[p.name for p in strict.paths].index("c.jpg")]


def test_images_over_the_decompression_bomb_limit_are_user_errors(folder, monkeypatch):
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL raises above twice this.
  with pytest.raises(UserError, match="a.png: not a readable image"):
    read_rgb(folder / "a.png")


def test_tfds_source_with_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=5):
    source = data.TfdsSource("clic", split="train")
    assert len(source) == 5 and source.image_key == "image"
    loader = _loader(source, global_batch_size=2, crop_size=64)  # Larger than mock images.
    batch = loader.batch_at(1)
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, _loader(source, global_batch_size=2,
                                                 crop_size=64).batch_at(1))
    assert data.TfdsSource("div2k", split="train").image_key == "hr"
    with pytest.raises(UserError, match="image features"):
      data.TfdsSource("div2k", split="train", image_key="label")


def test_tfds_records_that_are_not_8_bit_are_refused():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=1):
    source = data.TfdsSource("clic", split="train")
  source._source = [{"image": np.full((4, 4, 3), 300, np.uint16)}]  # Would wrap to 44.
  with pytest.raises(UserError, match=r"clic\[0\]: uint16 pixels"):
    source[0]


def test_tfds_without_the_extra_names_the_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Makes the import fail.
  with pytest.raises(UserError, match=r"msinn-jax\[tfds\]"):
    data.TfdsSource("clic")


def test_unknown_tfds_dataset_is_a_user_error():
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(UserError, match="cannot open"):
    data.TfdsSource("no_such_dataset_xyz")


def test_prefetcher_propagates_worker_errors():
  def items():
    yield 1
    yield 2
    raise KeyError("boom")

  with data.Prefetcher(items(), buffer_size=1) as it:
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="boom"):
      next(it)
    with pytest.raises(StopIteration):
      next(it)


def test_prefetcher_closes_a_blocked_producer():
  produced = []

  def endless():
    for i in range(10**9):
      produced.append(i)
      yield i

  before = threading.active_count()
  it = data.Prefetcher(endless(), buffer_size=2)
  assert next(it) == 0
  it.close()
  assert threading.active_count() == before
  assert len(produced) <= 5  # Bounded by the queue, not run to completion.
  assert list(data.Prefetcher(iter(range(3)))) == [0, 1, 2]


def test_batch_iterator_reports_loader_errors(source):
  loader = _loader(source)

  def broken(step, executor=None):
    raise RuntimeError(f"bad step {step}")

  loader.batch_at = broken
  with loader.iterator(prefetch=2, num_workers=1) as it:
    with pytest.raises(RuntimeError, match="bad step 0"):
      next(it)
