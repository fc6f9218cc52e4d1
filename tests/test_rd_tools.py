"""Tests of the RD results files and the `msinn bd-rate` / `msinn plot` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from msinn_jax import cli
from msinn_jax.jsonio import json_text
from msinn_jax.rd.plot import curve_style, plot_rd
from msinn_jax.rd.results import RDCurve, RDError

_BPP = [0.1, 0.2, 0.4, 0.8, 1.6]
_PSNR = [28., 31., 34., 37., 40.]
_MSSSIM = [0.9, 0.95, 0.975, 0.9875, 0.99375]


def _write(path, name="codec", rate_factor=1., psnr_shift=0., with_msssim=True, **extra):
  results = {"psnr-rgb": [p + psnr_shift for p in _PSNR],
             "bpp": [b * rate_factor for b in _BPP]}
  if with_msssim:
    results["ms-ssim-rgb"] = list(_MSSSIM)
  path.write_text(json.dumps({"name": name, "description": "test curve", "results": results,
                              **extra}))
  return str(path)


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_curve_round_trip_keeps_extra_keys(tmp_path):
  src = _write(tmp_path / "a.json", settings={"name": "qp", "values": [0, 1, 2, 3, 4]})
  obj = json.loads(open(src).read())
  obj["results"]["bpp-estimated"] = [0.09, 0.19, 0.39, 0.79, 1.59]
  curve = RDCurve.from_json(obj)
  curve.save(tmp_path / "b.json")
  again = RDCurve.load(tmp_path / "b.json")
  assert again == curve and again.to_json() == obj
  assert again.num_points == 5
  np.testing.assert_allclose(again.quality_db("ms-ssim"), -10. * np.log10(1. - np.array(_MSSSIM)))


def test_curve_quality_keys(tmp_path):
  db = RDCurve.from_json({"name": "x", "results": {"bpp": [1.], "ms-ssim-db-rgb": [12.5]}})
  assert db.quality_db("ms-ssim").tolist() == [12.5] and not db.has_quality("psnr")
  with pytest.raises(RDError, match="no psnr values"):
    db.quality_db("psnr")
  path = tmp_path / "unnamed.json"
  path.write_text('{"results": {"bpp": [1.0]}}')
  assert RDCurve.load(path).name == "unnamed"


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"name": "x"}', "'results'"),
    ('{"name": "x", "results": {"bpp": [1, "a"]}}', "list of numbers"),
    ('{"name": "x", "results": {"bpp": [1, 2], "psnr-rgb": [30]}}', "different lengths"),
    ('{"name": "x", "results": {"bpp": [], "psnr-rgb": []}}', "no points"),
])
def test_malformed_files(tmp_path, text, message):
  path = tmp_path / "bad.json"
  path.write_text(text)
  with pytest.raises(RDError, match=message):
    RDCurve.load(path)


def test_bd_rate_cli_json(tmp_path, capsys):
  anchor = _write(tmp_path / "anchor.json", name="anchor")
  test = _write(tmp_path / "test.json", name="test", rate_factor=0.9, psnr_shift=0.)
  code, out, _ = _run(capsys, "bd-rate", test, "--anchor", anchor, "--metric", "both", "--json")
  assert code == 0
  report = json.loads(out)
  assert report["test"]["name"] == "test" and report["anchor"]["spec"] == anchor
  for metric in ("psnr", "ms-ssim"):
    for method in ("cubic", "pchip"):
      assert report["results"][metric]["bd_rate_percent"][method] == pytest.approx(-10., abs=1e-9)
  assert report["results"]["psnr"]["quality_interval_db"] == [28., 40.]


def test_bd_rate_cli_text_with_references(capsys):
  code, out, _ = _run(capsys, "bd-rate", "ref:kodak/msinn-anchor12", "--anchor", "ref:kodak/vtm",
                      "--metric", "both")
  assert code == 0
  assert "-4.77 %" in out and "-4.95 %" in out and "BD-PSNR" in out
  assert "skipped" in out  # The paper's curve has no MS-SSIM.
  code, out, _ = _run(capsys, "bd-rate", "ref:kodak/msinn-anchor12", "--anchor", "ref:kodak/vtm",
                      "--min-quality", "36", "--json")
  assert code == 0
  assert json.loads(out)["results"]["psnr"]["bd_rate_percent"]["pchip"] == pytest.approx(-7.89, abs=0.01)


def test_bd_rate_cli_lists_references(capsys):
  code, out, _ = _run(capsys, "bd-rate", "--list-references")
  assert code == 0 and "ref:kodak/vtm" in out and "ref:tecnick/msinn-anchor8" in out


@pytest.mark.parametrize("argv, message", [
    (["bd-rate", "{tmp}/missing.json", "--anchor", "ref:kodak/vtm"], "no such file"),
    (["bd-rate", "{tmp}/bad.json", "--anchor", "ref:kodak/vtm"], "not valid JSON"),
    (["bd-rate", "ref:kodak/vtm", "--anchor", "ref:kodak/unknown"], "unknown reference"),
    (["bd-rate", "ref:kodak/msinn-anchor12", "--anchor", "ref:kodak/vtm", "--metric", "ms-ssim"],
     "no ms-ssim values"),
    (["bd-rate", "ref:kodak/vtm"], "--anchor"),
    (["plot", "{tmp}/missing.json", "-o", "{tmp}/rd.png"], "no such file"),
    (["plot", "{tmp}/bad.json", "-o", "{tmp}/rd.png"], "not valid JSON"),
    (["plot", "ref:kodak/vtm", "-o", "{tmp}/no/such/dir/rd.png"], "cannot write"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, message):
  (tmp_path / "bad.json").write_text('{"name": "x", "results": ')
  code, out, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
  assert code == 2 and out == ""
  assert err.count("\n") == 1 and err.startswith(f"msinn {argv[0]}: error:") and message in err


def test_plot_cli_writes_png(tmp_path, capsys):
  curve = _write(tmp_path / "ours.json", name="ours", psnr_shift=0.3)
  out_path = tmp_path / "rd.png"
  code, out, _ = _run(capsys, "plot", curve, "ref:kodak/vtm", "ref:kodak/msinn-anchor12",
                      "-o", str(out_path), "--title", "Kodak")
  assert code == 0 and "psnr-rgb, ms-ssim-rgb" in out
  assert out_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out_path.stat().st_size > 10_000


def test_non_finite_points_are_saved_as_null_refused_by_bd_rate_and_not_drawn(tmp_path, capsys):
  psnr = list(_PSNR)
  psnr[1], psnr[3] = float("nan"), float("inf")  # A diverged point; an exact round trip.
  RDCurve("gaps", {"bpp": _BPP, "psnr-rgb": psnr}).save(tmp_path / "gaps.json")
  text = (tmp_path / "gaps.json").read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text)["results"]["psnr-rgb"] == [28., None, 34., None, 40.]
  loaded = RDCurve.load(tmp_path / "gaps.json").quality_db("psnr")
  np.testing.assert_array_equal(np.isnan(loaded), [False, True, False, True, False])

  code, out, err = _run(capsys, "bd-rate", str(tmp_path / "gaps.json"), "--anchor",
                        "ref:kodak/vtm")
  assert code == 2 and out == "" and err == (
      "msinn bd-rate: error: curve 'gaps': points 2, 4 of 5 have no finite bpp and psnr; "
      "BD figures need every point finite\n")
  code, out, err = _run(capsys, "plot", str(tmp_path / "gaps.json"), "ref:kodak/vtm",
                        "-o", str(tmp_path / "rd.png"))
  assert code == 0 and (tmp_path / "rd.png").stat().st_size > 0
  assert err == ("msinn plot: warning: curve 'gaps': 2 of 5 points have no finite bpp and "
                 "psnr; drawn without them\n")


def test_plot_drops_panels_no_curve_has(tmp_path):
  curve = RDCurve.from_json({"name": "x", "results": {"bpp": _BPP, "psnr-rgb": _PSNR}})
  assert plot_rd([curve], tmp_path / "rd.svg") == ["psnr-rgb"]
  assert (tmp_path / "rd.svg").stat().st_size > 0
  with pytest.raises(RDError, match="none of the curves"):
    plot_rd([curve], tmp_path / "rd.png", metrics=("ms-ssim-rgb",))


def test_plot_tells_apart_more_curves_than_colours():
  styles = [tuple(sorted(curve_style(i).items())) for i in range(40)]
  assert len(set(styles)) == 40
  assert {s["color"] for s in map(curve_style, range(40))} == {f"C{i}" for i in range(10)}
  assert curve_style(0)["linestyle"] == "-" and curve_style(10)["linestyle"] != "-"


@pytest.mark.parametrize("flag, value, message", [
    ("--min-rate", "0", "expected a number > 0"), ("--max-rate", "nan", "finite"),
    ("--min-quality", "inf", "finite"), ("--max-quality", "x", "expected a number")])
def test_bd_rate_interval_flags_are_checked(capsys, flag, value, message):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["bd-rate", "ref:kodak/jpeg2000-openjpeg", "--anchor", "ref:kodak/vtm", flag, value])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_json_text_writes_non_finite_floats_as_null():
  text = json_text({"psnr": float("inf"), "errors": [float("nan"), 1.5],
                    "pair": (-float("inf"), 2), "name": "x"})
  assert text.endswith("\n") and "Infinity" not in text and "NaN" not in text
  assert json.loads(text) == {"psnr": None, "errors": [None, 1.5], "pair": [None, 2],
                              "name": "x"}
