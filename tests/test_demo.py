"""`msinn demo`: runs offline end to end with the default model (shipped or untrained)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from msinn_jax import demo
from msinn_jax.cli import main
from msinn_jax.rd.results import RDCurve
from msinn_jax.weights import load_model


def test_demo_end_to_end(tmp_path, capsys):
  out = tmp_path / "demo"
  # Small crops and two rates keep it quick; the defaults take ~2 minutes on 2 CPU cores.
  code = main(["demo", "--out", str(out), "--size", "64", "--rates", "0", "7"])
  stdout, err = capsys.readouterr()
  assert code == 0, err
  model = load_model(None).description  # The shipped model if there is one, else UNTRAINED.
  assert model in stdout.splitlines()[0]
  assert ("!! This is the UNTRAINED model" in stdout) == ("UNTRAINED" in model)
  assert "invertibility on" in stdout and "max|err|" in stdout
  images, _ = demo.sample_images(64)
  rows = [line.split() for line in stdout.splitlines()
          if line.split()[:1] and line.split()[0] in {s.name for s in images}]
  assert len(rows) == 2 * len(images)
  for name in {r[0] for r in rows}:  # image rate bpp est.bpp psnr enc dec
    low, high = sorted((r for r in rows if r[0] == name), key=lambda r: float(r[1]))
    assert float(high[2]) > float(low[2]) and float(high[4]) > float(low[4])
  assert "decoder != encoder" not in stdout
  assert (out / "rd.png").stat().st_size > 0
  curve = RDCurve.load(out / "rd.json")
  assert curve.num_points == 2 and model in curve.description
  for sample in images:
    np.testing.assert_array_equal(np.asarray(Image.open(out / f"{sample.name}.png")),
                                  sample.pixels)
    for rate in ("0", "7"):
      decoded = np.asarray(Image.open(out / f"{sample.name}_rate{rate}.png"))
      assert decoded.shape == sample.pixels.shape


def test_samples_are_bundled_photographs():
  pytest.importorskip("skimage")
  images, note = demo.sample_images(100)
  assert note is None
  assert [s.name for s in images] == list(demo.SAMPLE_NAMES)
  for s in images:
    assert s.pixels.shape == (100, 100, 3) and s.pixels.dtype == np.uint8
    assert s.pixels.std() > 10  # A photograph, not a blank crop.


def test_without_scikit_image_a_generated_image_is_used(monkeypatch):
  monkeypatch.setitem(sys.modules, "skimage", None)  # Makes `import skimage.data` fail.
  monkeypatch.setitem(sys.modules, "skimage.data", None)
  images, note = demo.sample_images(48)
  assert [s.name for s in images] == ["generated"] and "scikit-image" in note
  assert images[0].pixels.shape == (48, 48, 3) and images[0].pixels.std() > 10


def test_default_rates_and_bad_arguments(tmp_path, capsys):
  assert demo.default_rates(8) == (0.0, 2.0, 5.0, 7.0)
  assert demo.default_rates(4) == (0.0, 1.0, 2.0, 3.0)
  assert demo.default_rates(1) == (0.0,)
  code = main(["demo", "--out", str(tmp_path), "--size", "4"])
  _, err = capsys.readouterr()
  assert code == 2 and "too small" in err


def test_a_decoder_that_disagrees_makes_the_demo_fail(tmp_path, capsys, monkeypatch):
  from helpers import break_decoder
  from msinn_jax.tools.common import cached_codec
  # The very codec the demo gets (cached per spec), on the crops of the end-to-end test
  # above: its compiled programs serve this run too.
  codec, _ = cached_codec("default")  # `--checkpoint`'s default.
  break_decoder(codec, monkeypatch)
  code = main(["demo", "--out", str(tmp_path), "--size", "64", "--rates", "0"])
  out, err = capsys.readouterr()
  assert code == 1 and "decoder != encoder" in out
  assert "decoder disagreed with the encoder" in err
