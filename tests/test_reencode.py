"""Re-encoding generations: `msinn_jax.reencode` and `msinn reencode`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from helpers import break_decoder, image
from msinn_jax.cli import main
from msinn_jax.codec import DecodeMismatchError
from msinn_jax.errors import UserError
from msinn_jax.reencode import reencode
from msinn_jax.tools.common import cached_codec


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_checkpoint):
  """(checkpoint path, the CLI's own cached codec, PNG path, its pixels)."""
  root = tmp_path_factory.mktemp("reencode")
  rgb = np.asarray(np.round(image(1, 1, 30, 45)[0] * 255), np.uint8)
  png = root / "in.png"
  Image.fromarray(rgb).save(png)
  codec, _ = cached_codec(small_checkpoint)  # The codec the CLI will use: compiled once.
  return small_checkpoint, codec, str(png), rgb


def _psnr(a, b):
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64))**2)
  return 10 * np.log10(255.0**2 / mse)


def test_generations_chain_compress_and_decompress(setup):
  _, codec, _, rgb = setup
  generations, last = reencode(codec, rgb, 1.5, 3)
  assert [g.index for g in generations] == [1, 2, 3]
  for g in generations:
    assert g.bpp > 0 and g.estimated_bpp > 0 and math.isfinite(g.psnr)
    assert g.bpp == pytest.approx(8 * g.num_bytes / (30 * 45))
  # Generation 1 is a plain compress/decompress of the original.
  first = codec.compress(rgb, 1.5)
  decoded = codec.decompress(first.data).image
  assert generations[0].num_bytes == len(first.data)
  assert generations[0].estimated_bpp == pytest.approx(first.estimated_bits / (30 * 45))
  assert generations[0].psnr == pytest.approx(_psnr(decoded, rgb), abs=1e-3)
  assert generations[0].psnr_vs_previous == generations[0].psnr
  # Generation 2 codes generation 1's decoded image.
  second = codec.compress(decoded, 1.5)
  assert generations[1].num_bytes == len(second.data)
  again = codec.decompress(second.data).image
  assert generations[1].psnr == pytest.approx(_psnr(again, rgb), abs=1e-3)
  assert generations[1].psnr_vs_previous == pytest.approx(_psnr(again, decoded), abs=1e-3)
  assert last.shape == rgb.shape and last.dtype == np.uint8
  with pytest.raises(UserError):
    reencode(codec, rgb, 1.5, 0)


def test_a_decoder_disagreeing_with_the_encoder_stops_the_chain(setup, monkeypatch, capsys):
  ckpt, codec, png, rgb = setup
  break_decoder(codec, monkeypatch)
  with pytest.raises(DecodeMismatchError, match="1 values"):
    reencode(codec, rgb, 1.5, 2)
  code = main(["reencode", png, "--checkpoint", ckpt, "--quality", "1.5", "-k", "2"])
  err = capsys.readouterr().err
  assert code == 1 and err.startswith("msinn reencode: failed:") and err.count("\n") == 1


def test_cli_table_json_and_output(setup, tmp_path, capsys):
  ckpt, codec, png, rgb = setup
  out_png = tmp_path / "last.png"
  code = main(["reencode", png, "--checkpoint", ckpt, "--quality", "2", "-k", "3", "--json",
               "-o", str(out_png)])
  out, err = capsys.readouterr()
  assert code == 0, err
  report = json.loads(out)
  assert report["rate"] == 2 and (report["height"], report["width"]) == (30, 45)
  rows = report["generations"]
  assert [g["index"] for g in rows] == [1, 2, 3]
  assert all(g["bpp"] > 0 and g["psnr"] > 0 for g in rows)
  generations, last = reencode(codec, rgb, 2, 3)
  assert [g["num_bytes"] for g in rows] == [g.num_bytes for g in generations]
  np.testing.assert_array_equal(np.asarray(Image.open(out_png)), last)

  code = main(["reencode", png, "--checkpoint", ckpt, "-q", "2", "-k", "2"])
  out, err = capsys.readouterr()
  assert code == 0, err
  lines = out.splitlines()
  assert lines[1].split()[:3] == ["gen", "bpp", "est."]
  assert lines[2].split()[0] == "1" and lines[3].split()[0] == "2"
  assert "generation 1 -> 2" in out

  code = main(["reencode", png, "--checkpoint", ckpt, "-q", "2", "-k", "0"])
  _, err = capsys.readouterr()
  assert code == 2 and "at least one generation" in err

  out_jpg = tmp_path / "last.jpg"  # Lossy: refused before any generation runs.
  code = main(["reencode", png, "--checkpoint", ckpt, "-q", "2", "-k", "1", "-o", str(out_jpg)])
  _, err = capsys.readouterr()
  assert code == 2 and "written losslessly" in err and not out_jpg.exists()
