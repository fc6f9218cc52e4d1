"""Evaluation sweeps (`msinn_jax.eval_lib`) and `msinn eval`.

One small model serves every test: the library tests use the evaluator that `msinn eval
--checkpoint CKPT` uses (cached per spec), so each padded shape compiles once for the
whole file. `--device` is left out: a `jax.default_device` scope is part of jit's cache
key, so it would compile everything again. Images are 40x50 and 30x45 (padded to 64x64)
and 70x30 (padded to 128x64).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from helpers import break_decoder, image
from msinn_jax import eval_lib
from msinn_jax.cli import main
from msinn_jax.codec import DecodeMismatchError
from msinn_jax.errors import UserError
from msinn_jax.rd import RDCurve
from msinn_jax.tools import eval as eval_tool

SIZES = ((40, 50), (70, 30), (30, 45))
RESULT_KEYS = ("rate", "bpp", "bpp-estimated", "psnr-rgb", "ms-ssim-rgb", "ms-ssim-rgb-db",
               "encoding_time", "decoding_time")


def _rgb(seed: int, h: int, w: int) -> np.ndarray:
  return np.asarray(np.round(image(seed, 1, h, w)[0] * 255), np.uint8)


@pytest.fixture(scope="module")
def ckpt(small_checkpoint) -> str:
  return small_checkpoint  # The session's small model (conftest.py), shared with the codec tests.


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
  return [_rgb(seed, h, w) for seed, (h, w) in enumerate(SIZES, start=1)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, images) -> str:
  """Two PNGs of one padded shape, one of them in a sub-folder."""
  root = tmp_path_factory.mktemp("dataset")
  (root / "sub").mkdir()
  Image.fromarray(images[0]).save(root / "a.png")
  Image.fromarray(images[2]).save(root / "sub" / "b.png")
  return str(root)


@pytest.fixture(scope="module")
def evaluator(ckpt) -> eval_lib.Evaluator:
  return eval_tool._cached_evaluator(ckpt)[0]


def _check_structure(results: dict, num_rates: int, num_images: int | None = None):
  """The object round-trips through RDCurve with one point per rate (and per image)."""
  curve = RDCurve.from_json(results)
  assert curve.to_json() == results
  assert list(curve.results) == list(RESULT_KEYS)
  assert curve.num_points == num_rates
  if num_images is not None:
    per_image = results["per_image"]
    assert len(per_image["images"]) == num_images
    for key in RESULT_KEYS[1:]:
      assert len(per_image[key]) == num_rates
      assert all(len(row) == num_images for row in per_image[key]), key
      np.testing.assert_allclose(  # Averages are the per-image means (dB: see below).
          results["results"][key],
          [np.mean(row) for row in per_image[key]] if key != "ms-ssim-rgb-db" else
          [-10 * np.log10(1 - np.mean(row)) for row in per_image["ms-ssim-rgb"]],
          rtol=1e-6)  # float32 dB conversion.
  return curve


def test_parse_rates():
  assert eval_lib.parse_rates("all", 4) == [0., 1., 2., 3.]
  assert eval_lib.parse_rates("3, 0,1.5,3", 4) == [0., 1.5, 3.]
  assert eval_lib.parse_rates("all,0.5", 3) == [0., 0.5, 1., 2.]
  for bad, message in (("", "bad rate"), ("1,x", "bad rate"), ("4", "outside"),
                       ("-0.5", "outside"), ("nan", "outside")):
    with pytest.raises(UserError, match=message):
      eval_lib.parse_rates(bad, 4)


def test_estimate_sweep_compiles_once_per_shape(evaluator, images, tmp_path):
  results = evaluator.evaluate(images, [0, 1.5, 3], estimate_only=True, per_image=True,
                               progress=False, name="est")
  # Two padded shapes (64x64 twice, 128x64) x three rates: the rate is traced. No test
  # here uses another shape, so the count is 2 whatever ran before.
  assert evaluator.num_compiled_forwards == 2
  evaluator.evaluate(images[:1], [2.25], estimate_only=True, progress=False, warmup=False)
  assert evaluator.num_compiled_forwards == 2
  curve = _check_structure(results, 3, len(images))
  assert results["settings"]["mode"] == "estimate"
  assert results["per_image"]["images"] == ["0", "1", "2"]
  assert curve.results["bpp"] == curve.results["bpp-estimated"]
  curve.save(tmp_path / "est.json")
  assert RDCurve.load(tmp_path / "est.json") == curve


def test_bitstream_sweep_counts_whole_files(evaluator, images):
  codec = evaluator.codec
  rates = [0., 2.5]
  results = evaluator.evaluate(images[:2], rates, per_image=True, progress=False,
                               warmup=False)
  _check_structure(results, len(rates), 2)
  assert results["settings"]["mode"] == "bitstream"
  per_image = results["per_image"]
  for j, rate in enumerate(rates):
    for i, rgb in enumerate(images[:2]):
      data = codec.compress(rgb, rate).data  # Deterministic: the same file again.
      assert per_image["bpp"][j][i] == 8 * len(data) / (rgb.shape[0] * rgb.shape[1])
  # A new rate compiles nothing new: every codec piece takes the rate as an array.
  compiled = _codec_cache_sizes(codec)
  evaluator.evaluate(images[:2], [1.75], progress=False, warmup=False)
  assert _codec_cache_sizes(codec) == compiled

  # The estimate forward measures the same symbols as the coder's estimate.
  estimated = evaluator.evaluate(images[:2], rates, estimate_only=True, per_image=True,
                                 progress=False, warmup=False)["per_image"]
  # Same network, different XLA fusion: allow float32 round-off in the sums of -log2 p.
  np.testing.assert_allclose(estimated["bpp-estimated"], per_image["bpp-estimated"],
                             rtol=1e-4)
  np.testing.assert_allclose(estimated["psnr-rgb"], per_image["psnr-rgb"], atol=0.05)


def _codec_cache_sizes(codec) -> dict[str, int]:
  return {name: fn._cache_size() for name, fn in vars(codec).items()
          if hasattr(fn, "_cache_size")}


def test_decode_mismatch_is_reported(evaluator, images, monkeypatch):
  break_decoder(evaluator.codec, monkeypatch)
  with pytest.raises(DecodeMismatchError, match="1 values"):
    evaluator.code(images[0], 1.)


def _run(capsys, *argv):
  code = main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize("mode", ["--estimate-only", "--per-image"])
def test_cli_on_a_folder(ckpt, folder, tmp_path, capsys, mode):
  out_json = tmp_path / "results.json"
  code, out, err = _run(capsys, "eval", folder, "--checkpoint", ckpt, "--rates", "0,3",
                        mode, "--name", "tiny", "-o", str(out_json), "--no-progress")
  assert code == 0, err
  assert "PSNR" in out and "wrote" in out
  results = json.loads(out_json.read_text())
  curve = RDCurve.load(out_json)
  assert curve.name == "tiny" and curve.num_points == 2
  assert results["settings"]["num_images"] == 2
  if mode == "--per-image":
    _check_structure(results, 2, 2)
    assert results["per_image"]["images"] == ["a.png", "sub/b.png"]
  else:
    assert "per_image" not in results and results["settings"]["mode"] == "estimate"


def test_cli_on_mock_tfds(ckpt, tmp_path, capsys):
  tfds = pytest.importorskip("tensorflow_datasets")
  out_json = tmp_path / "clic.json"
  with tfds.testing.mock_data(num_examples=2):  # CLIC mock images are under 64x64.
    code, out, err = _run(capsys, "eval", "tfds:clic", "--checkpoint", ckpt, "--rates", "1",
                          "--estimate-only", "--per-image", "-o", str(out_json),
                          "--no-progress")
  assert code == 0, err
  results = json.loads(out_json.read_text())
  assert results["per_image"]["images"] == ["clic[0]", "clic[1]"]
  assert results["settings"]["dataset"] == "tfds:clic"


def test_unreadable_images_stop_the_sweep_before_any_coding(ckpt, images, tmp_path, capsys,
                                                            monkeypatch):
  root = tmp_path / "damaged"
  root.mkdir()
  Image.fromarray(images[0]).save(root / "a.png")
  (root / "b.png").write_bytes(b"not an image")  # Fails at the header.
  Image.fromarray(images[1]).save(root / "c.png")
  (root / "c.png").write_bytes((root / "c.png").read_bytes()[:100])  # Fails when decoded.
  coded = []
  monkeypatch.setattr(eval_lib.Evaluator, "estimate", lambda self, *a: coded.append(a))
  out_json = tmp_path / "results.json"
  code, out, err = _run(capsys, "eval", str(root), "--checkpoint", ckpt, "--rates", "0",
                        "--estimate-only", "-o", str(out_json), "--no-progress")
  assert code == 2 and out == "" and err.count("\n") == 1, err
  assert err.startswith("msinn eval: error: 2 of 3 images cannot be evaluated")
  assert "b.png: not a readable image" in err and "c.png: not a readable image" in err
  assert not coded and not out_json.exists()


def test_cli_errors_are_one_line(ckpt, folder, tmp_path, capsys):
  cases = [
      ((str(tmp_path / "missing"),), "does not exist"),
      ((folder, "--rates", "0,9"), "outside"),
      ((folder, "-o", str(tmp_path / "no" / "dir.json")), "no such folder"),
      (("tfds:",), "bad dataset"),
  ]
  for argv, message in cases:
    code, _, err = _run(capsys, "eval", *argv, "--checkpoint", ckpt, "--no-progress")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], (argv, err)
