"""The invertibility report: its numbers meet the flow tests' bounds, its log-determinants
agree, it has a row for every piece, and `msinn check-invertibility` reports the same."""

from __future__ import annotations

import functools
import json

import jax
import numpy as np
import pytest
from flax import traverse_util
from PIL import Image

from helpers import image, init_model, perturb, small_config
from msinn_jax.cli import main
from msinn_jax.convert import official_key
from msinn_jax.flow.multiscale import MultiScaleFlow
from msinn_jax.invertibility import InvertibilityChecker
from msinn_jax.tools.check_invertibility import expand_images
from msinn_jax.train.portable import save_weights


@pytest.fixture(scope="module")
def model():
  config = small_config(depths=(2, 2, 2, 2))  # Rows for units after the first, too.
  _, variables = init_model(config, image(0, 1, 64, 64))
  return config, variables["params"]


@pytest.fixture(scope="module")
def x():
  return np.asarray(image(4, 1, 64, 64)[0])


def _check(model, x, dtype):
  config, params = model
  return InvertibilityChecker(config, params, dtype, precision="highest").check(x)


def _assert_consistent_logdets(report, rtol):
  for p in report.pieces:
    assert abs(p.logdet_sum) <= rtol * max(1.0, abs(p.logdet_forward)), p
  rt = report.round_trip
  assert abs(rt.logdet_sum) <= rtol * abs(rt.logdet_analysis)
  assert abs(report.logdet_units_gap) <= rtol * abs(rt.logdet_analysis)


def test_float32_report_within_the_flow_bounds(model, x):
  report = _check(model, x, "float32")
  assert report.round_trip.max_abs_error <= 1e-5  # The bound of test_flow's float32 trips.
  assert report.round_trip.mean_abs_error <= report.round_trip.max_abs_error
  assert report.round_trip.psnr_db > 100
  for p in report.pieces:
    # Hidden states are far from [0, 1]: float32 errors scale with the input's magnitude.
    assert p.max_abs_error <= 1e-5 * max(1.0, p.input_max_abs), p
  # Sums of ~1e4 float32 terms in different orders: a few ulps relative.
  _assert_consistent_logdets(report, rtol=1e-6)
  # The per-unit path is the flow's own up to float32 fusion differences.
  assert report.path_mismatch <= 2e-5


def test_float64_report_within_the_flow_bounds(model, x):
  report = _check(model, x, "float64")
  assert report.round_trip.max_abs_error <= 1e-12  # The bound of test_flow's float64 trip.
  for p in report.pieces:
    assert p.max_abs_error <= 1e-12 * max(1.0, p.input_max_abs), p
  _assert_consistent_logdets(report, rtol=1e-12)
  assert report.path_mismatch <= 1e-12


def test_a_row_for_every_piece_unit_and_stage(model, x):
  config, _ = model
  report = _check(model, x, "float32")
  for s, depth in enumerate(config.depths):
    for i in range(depth):
      pieces = [p.piece for p in report.pieces if p.stage == s and p.unit == i]
      assert pieces == ["actnorm", "permute", "coupling", "unit"]
    assert [p.piece for p in report.pieces if p.stage == s and p.unit is None] == ["stage"]
  assert len(report.pieces) == sum(4 * d + 1 for d in config.depths)
  units = [p.logdet_forward for p in report.pieces if p.piece == "unit"]
  assert report.logdet_of_units == pytest.approx(sum(units), rel=1e-12)


def test_flow_without_actnorm_and_with_a_fixed_permutation():
  config = small_config(N=8, M=8, depths=(1, 1, 1, 1), flow_permutation="reverse",
                        flow_coupling="additive", use_act_norm=False)
  x = image(5, 1, 32, 32)
  flow = MultiScaleFlow(config)
  flow_params = jax.jit(functools.partial(flow.init, method=flow.analysis))(jax.random.key(0), x)
  params = {"flow": perturb(flow_params["params"])}
  report = InvertibilityChecker(config, params, precision="default").check(x[0])
  assert [p.piece for p in report.pieces if p.unit == 0][:3] == ["permute", "coupling", "unit"]
  assert all(p.logdet_forward == 0 for p in report.pieces)  # Volume preserving.
  assert report.round_trip.max_abs_error <= 1e-5
  assert report.path_mismatch <= 2e-5


def test_bad_inputs_are_refused(model):
  config, params = model
  with pytest.raises(ValueError, match="dtype"):
    InvertibilityChecker(config, params, "float16")
  with pytest.raises(ValueError, match="multiples"):
    InvertibilityChecker(config, params).check(np.zeros((30, 32, 3), np.float32))


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
  config, params = model
  root = tmp_path_factory.mktemp("inv")
  path = root / "small.npz"
  save_weights(path, params, config, card={})
  folder = root / "images"
  folder.mkdir()
  for seed, (h, w) in enumerate([(30, 45), (64, 64)]):
    rgb = np.asarray(np.round(image(seed, 1, h, w)[0] * 255), np.uint8)
    Image.fromarray(rgb).save(folder / f"im{seed}.png")
  (folder / "notes.txt").write_text("not an image")
  return str(path), folder


def test_cli_json_matches_the_library(model, files, capsys):
  config, params = model
  ckpt, folder = files
  code = main(["check-invertibility", str(folder), "--checkpoint", ckpt, "--json",
               "--precision", "highest"])
  out, err = capsys.readouterr()
  assert code == 0, err
  report = json.loads(out)
  assert [e["path"] for e in report["images"]] == [str(folder / "im0.png"),
                                                   str(folder / "im1.png")]
  assert report["dtype"] == "float32" and report["precision"] == "highest"
  first = report["images"][0]
  assert (first["padded_height"], first["padded_width"]) == (64, 64)
  assert len(first["pieces"]) == sum(4 * d + 1 for d in config.depths)
  worst = max(e["round_trip"]["max_abs_error"] for e in report["images"])
  assert report["max_abs_error"] == worst
  assert 0 < report["max_abs_error"] <= 1e-5
  # The second image is 64x64, not padded: the CLI's numbers are the library's.
  x = np.asarray(Image.open(folder / "im1.png"), np.float32) / 255
  expected = InvertibilityChecker(config, params, precision="highest").check(x)
  assert report["images"][1]["round_trip"]["max_abs_error"] == pytest.approx(
      expected.round_trip.max_abs_error, rel=1e-6, abs=1e-9)


def test_cli_table_and_errors(files, capsys, monkeypatch):
  ckpt, folder = files
  code = main(["check-invertibility", str(folder / "im1.png"), "--checkpoint", ckpt,
               "--precision", "highest"])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert "round trip g_s(g_a(x))" in out and "coupling" in out and "stage" in out
  assert "g_a - sum(units)" in out
  code = main(["check-invertibility", str(folder / "missing.png"), "--checkpoint", ckpt])
  _, err = capsys.readouterr()
  assert code == 2 and "no such image" in err
  empty = folder.parent / "empty"
  empty.mkdir()
  code = main(["check-invertibility", str(empty), "--checkpoint", ckpt])
  _, err = capsys.readouterr()
  assert code == 2 and "no image files" in err
  nested = empty / "sub"  # Folders are searched recursively, as `msinn eval` does.
  nested.mkdir()
  (nested / "copy.png").write_bytes((folder / "im1.png").read_bytes())
  assert expand_images([str(empty)]) == [str(nested / "copy.png")]
  # A broken file after a good one stops the command before the model checks either.
  (nested / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
  monkeypatch.setattr("msinn_jax.weights.load_model", lambda *a: pytest.fail("model loaded"))
  code = main(["check-invertibility", str(empty), "--checkpoint", ckpt])
  _, err = capsys.readouterr()
  assert code == 2 and "zz_broken.png: not a readable image" in err


def test_non_finite_round_trip_exits_1_with_valid_json(model, files, capsys, tmp_path):
  config, params = model
  ckpt, folder = files
  flat = traverse_util.flatten_dict(params)
  # The first piece of the flow: NaN reaches everything.
  first = next(p for p in flat if official_key(p, config) == "g_a0.0.actnorm.bias")
  flat[first] = np.full_like(flat[first], np.nan)
  broken = tmp_path / "nan.npz"
  save_weights(broken, traverse_util.unflatten_dict(flat), config, card={})
  code = main(["check-invertibility", str(folder / "im1.png"), "--checkpoint", str(broken),
               "--json"])
  out, err = capsys.readouterr()
  assert code == 1 and "non-finite" in err
  report = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
  assert report["max_abs_error"] is None
