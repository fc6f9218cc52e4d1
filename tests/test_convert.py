"""Weight conversion: official names and layouts in, clear errors for mismatches."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from helpers import image, init_model, small_config
from msinn_jax.convert import (convert_state_dict, export_state_dict, infer_config,
                               load_official, official_key)
from msinn_jax.config import ModelConfig
from msinn_jax.errors import CheckpointError


@pytest.fixture(scope="module")
def small():
  config = small_config()
  _, variables = init_model(config, image(0, 1, 64, 64))
  return config, variables["params"]


def _equal_trees(a, b):
  fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


def test_official_names_of_representative_parameters(small):
  config, _ = small
  cases = {
      ("flow", "stage2", "unit3", "actnorm", "logs"): "g_a2.3.actnorm.logs",
      ("flow", "stage0", "unit1", "permute", "kernel"): "g_a0.1.permute.weight",
      ("flow", "stage1", "unit0", "coupling", "conditioner", "res", "skip", "kernel"):
          "g_a1.0.block.0.skip.weight",
      ("flow", "stage3", "unit2", "coupling", "conditioner", "out", "bias"):
          "g_a3.2.block.1.conv.bias",
      ("cc_transforms_1", "conv8", "kernel"): "cc_transforms.1.8.weight",
      ("sc_transforms_4", "conv0", "bias"): "sc_transforms.4.0.bias",
      ("entropy_parameters_0", "conv4", "kernel"): "entropy_parameters.0.4.weight",
      ("gains", "scale_gain"): "scale_gain",
      ("post_net", "unet", "up_conv3", "se", "fc2", "kernel"):
          "post_net.unet.up_conv3.conv.3.fc.2.weight",
      ("post_net", "unet", "conv2", "conv0", "bias"): "post_net.unet.conv2.conv.0.bias",
      ("post_net", "unet", "context_refine3", "conv1", "kernel"):
          "post_net.unet.context_refine.3.conv1.weight",
      ("post_net", "unet", "up3", "kernel"): "post_net.unet.up3.0.weight",
      ("post_net", "conv1", "kernel"): "post_net.conv1.weight",
  }
  for path, key in cases.items():
    assert official_key(path, config) == key


def test_export_then_convert_is_identity(small):
  config, params = small
  sd = export_state_dict(params, config)
  assert sd["g_a0.0.block.0.conv1.weight"].shape == (config.N, 6, 3, 3)  # OIHW.
  assert sd["gain"].shape == (config.anchor_num, 138, 1, 1)
  _equal_trees(convert_state_dict(sd, config), params)


def test_prefixes_ignored_buffers_and_inference(small):
  config, params = small
  sd = {f"module.{k}": v for k, v in export_state_dict(params, config).items()}
  sd["module.g_a0.0.actnorm.inited"] = np.array(1, np.uint8)
  sd["module.sc_transforms.0.0.mask"] = np.ones((16, 48, 3, 3), np.float32)
  sd["module.gaussian_conditional._offset"] = np.zeros(0)
  assert infer_config(sd) == config
  _equal_trees(convert_state_dict(sd, config), params)


def test_plain_matrix_converts_to_lu(small):
  config, params = small
  sd = export_state_dict(params, config)
  lu_config = small_config(flow_permutation="invconv_lu")
  lu_params = convert_state_dict(sd, lu_config)
  u = lu_params["flow"]["stage1"]["unit0"]["permute"]
  w = u["p"] @ (np.tril(u["lower"], -1) + np.eye(24)) @ (
      np.triu(u["upper"], 1) + np.diag(u["sign_s"] * np.exp(u["log_s"])))
  np.testing.assert_allclose(w, sd["g_a1.0.permute.weight"], atol=1e-5)


def test_missing_unexpected_and_misshapen_keys_are_named(small):
  config, params = small
  sd = export_state_dict(params, config)
  missing = dict(sd)
  del missing["lrp_transforms.2.4.bias"]
  with pytest.raises(CheckpointError, match=r"lrp_transforms\.2\.4\.bias"):
    convert_state_dict(missing, config)
  extra = dict(sd, **{"hyperprior.weight": np.zeros(3)})
  with pytest.raises(CheckpointError, match=r"hyperprior\.weight"):
    convert_state_dict(extra, config)
  wrong = dict(sd, **{"g_a1.0.permute.weight": np.zeros((12, 12), np.float32)})
  with pytest.raises(CheckpointError, match=r"g_a1\.0\.permute\.weight.*\(12, 12\)"):
    convert_state_dict(wrong, config)
  with pytest.raises(CheckpointError, match="not an MSINN checkpoint"):
    infer_config({"conv.weight": np.zeros(1)})


def test_npz_fixture_layout_round_trip(small, tmp_path):
  config, params = small
  sd = export_state_dict(params, config)
  path = tmp_path / "weights.npz"
  np.savez(path, config_json=json.dumps(config.to_dict()),
           **{f"param/{k}": v for k, v in sd.items()})
  loaded_config, variables = load_official(path)
  assert loaded_config == config
  _equal_trees(variables["params"], params)
  with pytest.raises(CheckpointError, match="no such checkpoint"):
    load_official(tmp_path / "absent.pth.tar")
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip file")
  with pytest.raises(CheckpointError, match="cannot read"):
    load_official(bad)
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(CheckpointError, match="cannot read"):
    load_official(truncated)
  deflated = tmp_path / "deflated.npz"  # savez_compressed: damage hits zlib, not the zip.
  np.savez_compressed(deflated, **{f"param/{k}": v for k, v in sd.items()})
  raw = bytearray(deflated.read_bytes())
  raw[len(raw) // 3: len(raw) // 3 + 64] = bytes(64)
  deflated.write_bytes(bytes(raw))
  with pytest.raises(CheckpointError, match="cannot read"):
    load_official(deflated)
  foreign = tmp_path / "foreign_config.npz"
  np.savez(foreign, config_json=json.dumps({"N": 8, "no_such_option": 1}),
           **{f"param/{k}": v for k, v in sd.items()})
  with pytest.raises(CheckpointError, match="bad config_json"):
    load_official(foreign)


def test_incomplete_official_weights_are_a_checkpoint_error(small):
  config, params = small
  sd = export_state_dict(params, config)
  del sd["cc_transforms.0.0.weight"]  # Inference needs it for the context width.
  with pytest.raises(CheckpointError, match="not a complete MSINN checkpoint.*cc_transforms"):
    infer_config(sd)


def test_pytorch_checkpoint_with_state_dict_wrapper(small, tmp_path):
  torch = pytest.importorskip("torch", reason="torch is an optional extra")
  config, params = small
  sd = {f"module.{k}": torch.from_numpy(v) for k, v in export_state_dict(params, config).items()}
  path = tmp_path / "ckpt.pth.tar"
  torch.save({"epoch": 3, "state_dict": sd}, path)
  loaded_config, variables = load_official(path)
  assert loaded_config == config
  _equal_trees(variables["params"], params)


def test_convert_command_writes_a_loadable_checkpoint(small, tmp_path, capsys):
  from msinn_jax.cli import main
  from msinn_jax.weights import load_model
  config, params = small
  sd = export_state_dict(params, config)
  src = tmp_path / "w.npz"
  np.savez(src, config_json=json.dumps(config.to_dict()),
           **{f"param/{k}": v for k, v in sd.items()})
  assert main(["convert", str(src), "-o", str(tmp_path / "ckpt")]) == 0
  loaded = load_model(str(tmp_path / "ckpt"))
  assert loaded.config == config
  _equal_trees(jax.device_get(loaded.variables["params"]), params)
  assert main(["convert", str(src), "-o", str(tmp_path / "ckpt")]) == 2  # Not empty.
  assert "not an empty directory" in capsys.readouterr().err
  (tmp_path / "file").write_text("kept")
  assert main(["convert", str(src), "-o", str(tmp_path / "file")]) == 2
  assert "not an empty directory" in capsys.readouterr().err
  assert (tmp_path / "file").read_text() == "kept"
  for bad, message in (("[3]", "JSON object"), ('{"no_such_option": 1}', "no_such_option"),
                       ("{", "not JSON")):
    code = main(["convert", str(src), "-o", str(tmp_path / "new"), "--config", bad])
    assert code == 2 and message in capsys.readouterr().err, bad
  assert not (tmp_path / "new").exists()
  code = main(["convert", str(src), "-o", str(tmp_path / "k3"), "--config",
               '{"spatial_context_num": 3}'])
  assert code == 0 and load_model(str(tmp_path / "k3")).config.spatial_context_num == 3
  # Files that are no checkpoint: said so, not NumPy's advice to unpickle or a call for torch.
  (tmp_path / "image.npz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
  (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
  for bad, message in (("image.npz", "not a .npz (zip) archive"),
                       ("image.png", "not a checkpoint file")):
    assert main(["convert", str(tmp_path / bad), "-o", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert message in err and "pickle" not in err and "needs torch" not in err, err


def test_checkpoint_whose_config_does_not_fit_its_params_is_refused(small, tmp_path):
  from msinn_jax.train.checkpoint import Checkpointer
  from msinn_jax.weights import load_model
  config, params = small
  wider = ModelConfig.from_dict({**config.to_dict(), "N": config.N + 8})
  with Checkpointer(tmp_path / "ckpt", max_to_keep=1, async_save=False) as ckpt:
    ckpt.save(0, {"params": params}, {"model": wider.to_dict()}, force=True)
  with pytest.raises(CheckpointError, match="does not fit the model: parameter .* where the "
                                            "model needs"):
    load_model(str(tmp_path / "ckpt"))


def test_unused_context_networks_of_the_official_model_are_accepted():
  """The official model builds sc_transforms/entropy_parameters for every slice but uses
  them only for the last `spatial_context_num`; their weights are in its checkpoints."""
  from msinn_jax.convert import abstract_params
  config = small_config(spatial_context_num=3, sc_type="ckbd_k5", lrp=False)
  zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, np.float32),
                                 abstract_params(config))
  sd = export_state_dict(zeros, config)
  assert "sc_transforms.0.weight" not in sd and "sc_transforms.2.weight" in sd
  sd["sc_transforms.0.weight"] = np.zeros((96, 48, 5, 5), np.float32)
  sd["entropy_parameters.1.0.weight"] = np.zeros((160, 192, 1, 1), np.float32)
  assert infer_config(sd, spatial_context_num=3) == config
  convert_state_dict(sd, config)
  sd["sc_transforms.2.extra"] = np.zeros(1, np.float32)
  with pytest.raises(CheckpointError, match=r"sc_transforms\.2\.extra"):
    convert_state_dict(sd, config)
