"""`msinn compress` / `msinn decompress`: round trips through files, one-line errors, and
what every command sets up (its imports, the compilation cache)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from helpers import image
from msinn_jax import cli
from msinn_jax.cli import main
from msinn_jax.codec import Codec
from msinn_jax.tools.common import cached_codec, compilation_cache_dir, enable_compilation_cache


@pytest.fixture(scope="module")
def ckpt(small_checkpoint):
  """(path, the codec the CLI loads from it: one per path and session)."""
  return small_checkpoint, cached_codec(small_checkpoint)[0]


@pytest.fixture(scope="module")
def png(tmp_path_factory):
  path = tmp_path_factory.mktemp("img") / "in.png"
  rgb = np.asarray(np.round(image(1, 1, 30, 45)[0] * 255), np.uint8)
  Image.fromarray(rgb).save(path)
  return str(path), rgb


def _run(capsys, *argv):
  code = main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_compress_then_decompress(ckpt, png, tmp_path, capsys):
  path, codec = ckpt
  src, rgb = png
  code, out, err = _run(capsys, "compress", src, "-o", str(tmp_path / "a.msinn"), "-q", "2.5",
                        "--checkpoint", path, "--device", "cpu")
  assert code == 0, err
  assert "bpp" in out and "estimated" in out
  code, out, err = _run(capsys, "decompress", str(tmp_path / "a.msinn"), "-o",
                        str(tmp_path / "b.png"), "--checkpoint", path)
  assert code == 0, err
  decoded = np.asarray(Image.open(tmp_path / "b.png"))
  np.testing.assert_array_equal(decoded, codec.compress(rgb, 2.5).reconstruction)


def test_decompress_writes_the_lossless_format_its_extension_names(ckpt, png, tmp_path,
                                                                    capsys):
  path, codec = ckpt
  _, rgb = png
  encoded = codec.compress(rgb, 1)
  (tmp_path / "a.msinn").write_bytes(encoded.data)
  for suffix, pil_format in ((".ppm", "PPM"), (".TIF", "TIFF"), (".png", "PNG")):
    out = tmp_path / f"b{suffix}"
    code, _, err = _run(capsys, "decompress", str(tmp_path / "a.msinn"), "-o", str(out),
                        "--checkpoint", path)
    assert code == 0, err
    with Image.open(out) as img:
      assert img.format == pil_format
      np.testing.assert_array_equal(np.asarray(img), encoded.reconstruction)
  # A lossy format would code the decoded image again: refused before decoding.
  _assert_one_line_error(*_run(capsys, "decompress", str(tmp_path / "a.msinn"), "-o",
                               str(tmp_path / "b.jpg"), "--checkpoint", path)[::2],
                         "written losslessly")
  assert not (tmp_path / "b.jpg").exists()


def _assert_one_line_error(code, err, pattern):
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in err, err
  assert pattern in lines[0], lines[0]


def test_bad_inputs_give_one_line_errors(ckpt, png, tmp_path, capsys):
  path, _ = ckpt
  src, rgb = png
  out = str(tmp_path / "o.msinn")
  _assert_one_line_error(*_run(capsys, "compress", str(tmp_path / "none.png"), "-o", out,
                               "-q", "1", "--checkpoint", path)[::2], "no such image")
  (tmp_path / "text.png").write_text("hello")
  _assert_one_line_error(*_run(capsys, "compress", str(tmp_path / "text.png"), "-o", out,
                               "-q", "1", "--checkpoint", path)[::2], "not a readable image")
  Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "deep.png")  # Mode I;16.
  _assert_one_line_error(*_run(capsys, "compress", str(tmp_path / "deep.png"), "-o", out,
                               "-q", "1", "--checkpoint", path)[::2], "not supported")
  _assert_one_line_error(*_run(capsys, "compress", src, "-o", out, "-q", "9",
                               "--checkpoint", path)[::2], "outside")
  _assert_one_line_error(*_run(capsys, "compress", str(tmp_path), "-o", out, "-q", "1",
                               "--checkpoint", path)[::2], "is a folder; give an image file")
  _assert_one_line_error(*_run(capsys, "decompress", str(tmp_path), "-o", str(tmp_path / "d.png"),
                               "--checkpoint", path)[::2], "is a folder; give a file")
  _assert_one_line_error(*_run(capsys, "compress", src, "-o", out, "-q", "1",
                               "--checkpoint", str(tmp_path / "nope.npz"))[::2],
                         "no such checkpoint")


def test_outputs_are_refused_before_any_work(ckpt, png, tmp_path, capsys, monkeypatch):
  path, _ = ckpt
  src, _ = png
  def no_model(*args):
    raise AssertionError("the model ran before the output was checked")
  for tool in ("compress", "decompress", "reencode"):
    monkeypatch.setattr(f"msinn_jax.tools.{tool}.cached_codec", no_model)
  monkeypatch.setattr("msinn_jax.tools.eval._cached_evaluator", no_model)
  victim = tmp_path / "victim.png"
  victim.write_bytes(pathlib.Path(src).read_bytes())
  (tmp_path / "folder.png").mkdir()
  (tmp_path / "s.msinn").write_bytes(b"not read")
  q = ["-q", "1", "--checkpoint", path]
  cases = [
      (["compress", str(victim), "-o", str(victim), *q], "it is the input"),
      (["compress", src, "-o", str(tmp_path / "missing" / "a.msinn"), *q], "no such folder"),
      (["compress", src, "-o", str(tmp_path), *q], "it is a folder"),
      (["decompress", str(tmp_path / "s.msinn"), "-o", str(tmp_path / "folder.png")],
       "it is a folder"),
      (["reencode", str(victim), "-o", str(victim), *q], "it is the input"),
      (["eval", str(tmp_path), "-o", str(tmp_path / "folder.png")], "it is a folder"),
      (["plot", "ref:kodak/vtm", "-o", str(tmp_path / "missing" / "rd.png")], "no such folder"),
  ]
  for argv, pattern in cases:
    code, _, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, pattern)
    assert ".tmp-" not in err
  assert victim.read_bytes() == pathlib.Path(src).read_bytes()


def test_grayscale_and_rgba_are_coded_as_rgb(ckpt, png, tmp_path, capsys):
  path, _ = ckpt
  _, rgb = png
  Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])).save(tmp_path / "a.png")
  for name in ("g.png", "a.png"):
    code, _, err = _run(capsys, "compress", str(tmp_path / name), "-o",
                        str(tmp_path / f"{name}.msinn"), "-q", "1", "--checkpoint", path)
    assert code == 0, err
    if name == "a.png":  # Said in one line, without Python's source excerpt.
      assert err.strip() == f"msinn compress: warning: {tmp_path / name}: alpha channel dropped"
    code, _, err = _run(capsys, "decompress", str(tmp_path / f"{name}.msinn"), "-o",
                        str(tmp_path / f"{name}.out.png"), "--checkpoint", path)
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / f"{name}.out.png")).shape == (30, 45, 3)


def test_bad_streams_give_one_line_errors_and_keep_existing_output(ckpt, png, tmp_path,
                                                                    capsys):
  path, codec = ckpt
  _, rgb = png
  good = codec.compress(rgb, 1).data
  target = tmp_path / "keep.png"
  target.write_bytes(b"previous result")
  cases = {
      "empty": b"",
      "truncated": good[: len(good) // 2],
      "flipped": good[:60] + bytes([good[60] ^ 0x10]) + good[61:],
      "not msinn": b"PNG" * 40,
  }
  for name, data in cases.items():
    f = tmp_path / f"{name.replace(' ', '_')}.msinn"
    f.write_bytes(data)
    code, _, err = _run(capsys, "decompress", str(f), "-o", str(target), "--checkpoint", path)
    assert code == 2 and len(err.strip().splitlines()) == 1, (name, err)
    assert target.read_bytes() == b"previous result"
  other = Codec(codec.config, {"params": {**codec.variables["params"],
                                          "initial_scale": codec.variables["params"]
                                          ["initial_scale"] * 2}})
  (tmp_path / "other.msinn").write_bytes(other.compress(rgb, 1).data)
  _assert_one_line_error(*_run(capsys, "decompress", str(tmp_path / "other.msinn"), "-o",
                               str(target), "--checkpoint", path)[::2], "another model")


def test_commands_start_without_the_plotting_and_interpolation_libraries():
  """Building the parser (what every `msinn` command does first) leaves matplotlib and
  scipy.interpolate unimported: together they cost over a second of each command's
  start-up, and only `plot`, `demo` and `bd-rate` (its piecewise-cubic BD) use them."""
  code = ("import sys; from msinn_jax import cli; cli.build_parser(); "
          "print([m for m in ('matplotlib', 'scipy.interpolate') if m in sys.modules])")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=120)
  assert out.stdout.strip() == "[]"


def test_compilation_cache_folder_follows_the_environment_and_the_platform(tmp_path):
  home = {"XDG_CACHE_HOME": str(tmp_path)}
  assert compilation_cache_dir("gpu", home) == tmp_path / "msinn-jax" / "jax"
  assert compilation_cache_dir("tpu", home) == tmp_path / "msinn-jax" / "jax"
  assert compilation_cache_dir("cpu", home) is None
  mine = {**home, "MSINN_COMPILATION_CACHE": str(tmp_path / "mine")}
  assert compilation_cache_dir("cpu", mine) == tmp_path / "mine"
  assert compilation_cache_dir("gpu", {**home, "MSINN_COMPILATION_CACHE": "OFF"}) is None


def test_enabling_points_jax_at_the_folder_unless_jax_has_one(tmp_path, monkeypatch):
  names = ("jax_compilation_cache_dir", "jax_compilation_cache_max_size",
           "jax_persistent_cache_min_compile_time_secs")
  saved = {name: getattr(jax.config, name) for name in names}  # tests/conftest.py's.
  monkeypatch.setenv("MSINN_COMPILATION_CACHE", str(tmp_path / "cache"))
  assert enable_compilation_cache("cpu") == pathlib.Path(saved[names[0]])  # JAX's own wins.
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    assert enable_compilation_cache("cpu") == tmp_path / "cache"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    assert jax.config.jax_compilation_cache_max_size == 2**30
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
    assert (tmp_path / "cache").is_dir()
    jax.config.update("jax_compilation_cache_dir", None)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MSINN_COMPILATION_CACHE", str(tmp_path / "file" / "cache"))
    assert enable_compilation_cache("cpu") is None  # Not a folder: the cache stays off.
    assert jax.config.jax_compilation_cache_dir is None
  finally:
    for name, value in saved.items():
      jax.config.update(name, value)


def test_only_commands_that_run_the_model_enable_the_cache(tmp_path, monkeypatch, capsys):
  calls = []
  monkeypatch.setattr(cli, "enable_compilation_cache", calls.append)
  missing = str(tmp_path / "missing.png")
  assert _run(capsys, "compress", missing, "-o", str(tmp_path / "a.msinn"), "-q", "1",
              "--device", "cpu")[0] == 2
  assert _run(capsys, "bd-rate", str(tmp_path / "missing.json"))[0] == 2
  assert calls == ["cpu"]
