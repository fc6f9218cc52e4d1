"""Weight conversion from the official PyTorch checkpoints (and the parity fixtures).

The official `state_dict` names (`g_a0.3.block.0.conv1.weight`, `cc_transforms.1.4.bias`,
...) are derived from this model's parameter paths by `official_key`, so that the
converter walks *our* parameter tree, fetches each official tensor, changes its layout
(OIHW -> HWIO, Linear [out, in] -> [in, out], [1, C, 1, 1] -> [C]) and checks its shape.
A key that is missing, left over, or of the wrong shape is a `CheckpointError` naming it.

Inputs: `.pth` / `.pth.tar` files as released by the authors (with or without a
`state_dict` wrapper and DataParallel `module.` prefixes; reading them needs the optional
`torch` extra), and the `.npz` layout of the parity fixtures (`param/<official key>`
arrays plus `config_json`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import zipfile
import zlib
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from msinn_jax.config import ModelConfig
from msinn_jax.errors import CheckpointError, UserError
from msinn_jax.flow.mixing import lu_from_matrix, permutation_indices

# The file names PyTorch checkpoints go by (`torch.save`; the official code writes .pth.tar).
TORCH_EXTENSIONS = (".pth", ".pth.tar", ".tar", ".pt")
# What numpy raises for a damaged or truncated .npz (stored or deflated).
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)

# Official entries that carry no parameters of this model.
_IGNORED = (
    re.compile(r".*\.actnorm\.inited$"),
    re.compile(r".*\.mask$"),
    re.compile(r"^gaussian_conditional\..*"),
    re.compile(r"^lower_bound\.bound$"),
    re.compile(r".*\.permute\.indices(_inverse)?$"),
)

# (pattern on our '/'-joined path, replacement) applied in order; the result has '/'
# turned into '.'.
_RULES = (
    (r"^flow/stage(\d+)/unit(\d+)/", r"g_a\1/\2/"),
    (r"/coupling/conditioner/res/", r"/block/0/"),
    (r"/coupling/conditioner/out/", r"/block/1/conv/"),
    (r"^gains/", r""),
    (r"^(cc_transforms|sc_transforms|entropy_parameters|lrp_transforms)_(\d+)/conv(\d+)/",
     r"\1/\2/\3/"),
    (r"/se/fc(\d)/", r"/conv/3/fc/\1/"),
    (r"^(post_net/unet/(?:conv\d|up_conv\d))/conv(\d)/", r"\1/conv/\2/"),
    (r"/context_refine(\d+)/", r"/context_refine/\1/"),
    (r"^post_net/unet/(up\d)/", r"post_net/unet/\1/0/"),
    (r"/kernel$", r"/weight"),
)


def official_key(path: tuple[str, ...], config: ModelConfig) -> str:
  """The official `state_dict` key of one of this model's parameters."""
  s = "/".join(path)
  for pattern, repl in _RULES:
    s = re.sub(pattern, repl, s)
  if config.sc_type != "multi_ckbd":
    s = re.sub(r"^sc_transforms/(\d+)/0/", r"sc_transforms/\1/", s)
  return s.replace("/", ".")


def _to_ours(key: str, value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  """Changes one official tensor to this model's layout."""
  v = np.asarray(value, np.float32)
  if v.ndim == 4 and len(target_shape) == 4:  # Conv OIHW -> HWIO.
    return v.transpose(2, 3, 1, 0)
  if v.ndim == 4 and v.shape[2:] == (1, 1):  # [1, C, 1, 1] or [A, C, 1, 1].
    v = v.reshape(v.shape[:2])
    return v[0] if len(target_shape) == 1 else v
  if v.ndim == 2 and key.endswith(".weight") and ".fc." in key:  # Linear [out, in].
    return v.T
  return v


@functools.lru_cache(maxsize=8)
def abstract_params(config: ModelConfig) -> dict[str, Any]:
  """Shapes and dtypes of the parameter tree (no computation)."""
  from msinn_jax.model import MSINN  # Local import: model imports nothing from here.

  x = jax.ShapeDtypeStruct((1, config.pad_multiple, config.pad_multiple, config.in_channels),
                           jnp.float32)
  model = MSINN(config)
  rngs = {"params": jax.random.key(0), "noise": jax.random.key(0)}
  return jax.eval_shape(lambda: model.init(rngs, jnp.zeros(x.shape, x.dtype), 0))["params"]


def check_fit(params: Any, expected: Any, source: str) -> None:
  """Raises CheckpointError unless `params` has exactly the leaves of `expected` (an
  abstract tree, e.g. `abstract_params(config)`), with the same shapes and dtypes; the
  message names the first parameter that differs."""
  want = traverse_util.flatten_dict(expected)
  have = traverse_util.flatten_dict(params)
  describe = lambda leaf: ("missing" if leaf is None  # noqa: E731
                           else f"{tuple(leaf.shape)} {jnp.dtype(leaf.dtype)}")
  for name in sorted(set(want) | set(have)):
    a, b = want.get(name), have.get(name)
    if describe(a) != describe(b):
      raise CheckpointError(f"{source} does not fit the model: parameter {'/'.join(name)} "
                            f"is {describe(b)} where the model needs {describe(a)}")


def convert_state_dict(state_dict: Mapping[str, Any], config: ModelConfig) -> dict[str, Any]:
  """Official state_dict (numpy or torch tensors) -> this model's `params` tree."""
  sd = {_strip_prefix(k): _numpy(v) for k, v in state_dict.items()}
  flat = traverse_util.flatten_dict(abstract_params(config))
  out, used = {}, set()
  lu_cache: dict[str, dict[str, np.ndarray]] = {}
  for path, leaf in flat.items():
    key = official_key(path, config)
    shape = tuple(leaf.shape)
    m = re.match(r"^(.*\.permute)\.(p|lower|upper|log_s|sign_s)$", key)
    if m and key not in sd and f"{m.group(1)}.weight" in sd:
      # A plain official matrix into the LU parameterisation.
      wkey = f"{m.group(1)}.weight"
      lu_cache.setdefault(wkey, lu_from_matrix(sd[wkey]))
      value, _ = lu_cache[wkey][m.group(2)], used.add(wkey)
    elif key not in sd:
      raise CheckpointError(f"checkpoint has no entry {key!r} (for parameter "
                            f"{'/'.join(path)} of shape {shape})")
    else:
      value = _to_ours(key, sd[key], shape)
      used.add(key)
    if tuple(value.shape) != shape:
      raise CheckpointError(f"checkpoint entry {key!r} has shape {tuple(value.shape)}, "
                            f"which does not fit parameter {'/'.join(path)} of shape {shape}")
    out[path] = jnp.asarray(value, leaf.dtype)
  _check_permutations(sd, config)
  # The official model builds spatial-context and entropy-parameter networks for every
  # slice, but uses them only for the last `spatial_context_num` slices.
  unused = [re.compile(rf"^(sc_transforms|entropy_parameters)\.{k}\.")
            for k in range(config.num_slices) if not config.uses_spatial_context(k)]
  left = sorted(k for k in sd if k not in used
                and not any(p.match(k) for p in (*_IGNORED, *unused)))
  if left:
    raise CheckpointError(f"checkpoint has {len(left)} unexpected entries, e.g. {left[:3]} "
                          "(does the model configuration match the checkpoint?)")
  return traverse_util.unflatten_dict(out)


def export_state_dict(params: Mapping[str, Any], config: ModelConfig) -> dict[str, np.ndarray]:
  """This model's `params` -> an official-layout state_dict (numpy arrays), the inverse
  of `convert_state_dict` (for "invconv_lu" the LU factors keep their official names)."""
  out = {}
  for path, v in traverse_util.flatten_dict(dict(params)).items():
    key, v = official_key(path, config), np.asarray(v, np.float32)
    if v.ndim == 4:
      v = v.transpose(3, 2, 0, 1)  # HWIO -> OIHW.
    elif key.endswith((".actnorm.bias", ".actnorm.logs")) or key == "initial_scale":
      v = v.reshape(1, -1, 1, 1)
    elif key in ("gain", "inv_gain", "scale_gain"):
      v = v.reshape(*v.shape, 1, 1)
    elif v.ndim == 2 and ".fc." in key:
      v = v.T
    out[key] = v
  return out


def _check_permutations(sd: Mapping[str, np.ndarray], config: ModelConfig) -> None:
  """Fixed "shuffle" permutations are not parameters here: the checkpoint's must match."""
  for key, idx in sd.items():
    m = re.match(r"^g_a(\d+)\.(\d+)\.permute\.indices$", key)
    if m and config.flow_permutation == "shuffle":
      seed = int(m.group(1)) * 1000 + int(m.group(2))
      if not np.array_equal(np.asarray(idx), permutation_indices("shuffle", idx.size, seed)):
        raise CheckpointError(f"{key}: random 'shuffle' permutations of the official code "
                              "cannot be reproduced; use invconv checkpoints")


def infer_config(sd: Mapping[str, Any], **overrides) -> ModelConfig:
  """Guesses the constructor options from the keys and shapes of an official state_dict
  (spatial_context_num cannot be seen in the weights: default all slices)."""
  sd = {_strip_prefix(k): v for k, v in sd.items()}
  if "gain" not in sd or "g_a0.0.block.0.conv1.weight" not in sd:
    raise CheckpointError("not an MSINN checkpoint: no 'gain' or 'g_a0.0.block.0.conv1.weight'")
  depths, s = [], 0
  while f"g_a{s}.0.block.0.conv1.weight" in sd:
    d = 0
    while f"g_a{s}.{d}.block.0.conv1.weight" in sd:
      d += 1
    depths.append(d)
    s += 1
  try:
    last = len(depths) - 1
    w0 = _numpy(sd["g_a0.0.block.1.conv.weight"])
    c0 = _numpy(sd["g_a0.0.block.0.conv1.weight"]).shape[1] * 2
    if "g_a0.0.permute.weight" in sd:
      perm = "invconv"
    elif "g_a0.0.permute.lower" in sd:
      perm = "invconv_lu"
    elif "g_a0.0.permute.indices" in sd:
      perm = "shuffle"
    else:
      perm = "reverse"  # "cross" and "reverse" have no state; choose by override.
    opts = dict(
        N=int(_numpy(sd["g_a0.0.block.0.conv1.weight"]).shape[0]),
        M=int(_numpy(sd[f"g_a{last}.0.block.0.conv1.weight"]).shape[0]),
        depths=tuple(depths),
        flow_permutation=perm,
        flow_coupling="affine" if w0.shape[0] == c0 else "additive",
        use_act_norm="g_a0.0.actnorm.bias" in sd,
        post_process="post_net.conv1.weight" in sd,
        lrp="lrp_transforms.0.0.weight" in sd,
        sc_type=_infer_sc_type(sd),
        anchor_num=int(_numpy(sd["gain"]).shape[0]),
        context_width=int(_numpy(sd["cc_transforms.0.0.weight"]).shape[0]),
        in_channels=c0 // 4,
    )
    opts.update(overrides)
    return ModelConfig(**opts)
  except (KeyError, ValueError, IndexError) as e:
    raise CheckpointError(f"not a complete MSINN checkpoint: {type(e).__name__}: {e}") from None


def _infer_sc_type(sd: Mapping[str, Any]) -> str:
  for key, value in sd.items():
    if re.match(r"^sc_transforms\.\d+\.0\.weight$", key):
      return "multi_ckbd"
    if re.match(r"^sc_transforms\.\d+\.weight$", key):
      return f"ckbd_k{_numpy(value).shape[-1]}"
  return "multi_ckbd"  # No spatial context in use at all.


def load_official(path: str | os.PathLike, config: ModelConfig | None = None,
                  overrides: Mapping[str, Any] | None = None
                  ) -> tuple[ModelConfig, dict[str, Any]]:
  """Reads an official checkpoint or a parity fixture.

  Args:
    path: `.pth` / `.pth.tar` (torch needed) or `.npz` (parity-fixture layout).
    config: the model configuration; by default read from the fixture's `config_json`
      or inferred from the weights.
    overrides: constructor options replacing those of that configuration before the
      weights are laid out (the layout may depend on them).

  Returns:
    (config, {"params": params}).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(f"no such checkpoint file: {path}")
  if path.endswith(".npz"):
    if not zipfile.is_zipfile(path):  # Else NumPy suggests unpickling it.
      raise CheckpointError(f"cannot read {path}: not a .npz (zip) archive")
    try:
      with np.load(path, allow_pickle=False) as z:
        sd = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
        cfg_json = str(z["config_json"]) if "config_json" in z.files else None
    except NPZ_ERRORS as e:
      raise CheckpointError(f"cannot read {path} as a .npz checkpoint: {e}") from None
    if config is None and cfg_json is not None:
      try:
        config = ModelConfig.from_dict(json.loads(cfg_json))
      except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad config_json: {e}") from None
  elif path.endswith(TORCH_EXTENSIONS):
    sd = _read_torch(path)
  else:
    raise CheckpointError(f"{path}: not a checkpoint file (expected "
                          f"{', '.join(TORCH_EXTENSIONS)} or .npz)")
  if not sd:
    raise CheckpointError(f"{path} holds no parameters")
  config = config or infer_config(sd)
  if overrides:
    try:
      config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    except (TypeError, ValueError) as e:
      raise UserError(f"bad configuration override {dict(overrides)}: {e}") from None
  return config, {"params": convert_state_dict(sd, config)}


def _read_torch(path: str) -> dict[str, Any]:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointError("reading PyTorch checkpoints needs torch: pip install "
                          "'msinn-jax[torch]'") from None
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for bad files.
    raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {e}") from None
  if isinstance(obj, dict) and "state_dict" in obj:
    obj = obj["state_dict"]
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path} does not hold a state_dict")
  return dict(obj)


def _strip_prefix(key: str) -> str:
  return key[len("module."):] if key.startswith("module.") else key


def _numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach"):
    v = v.detach().cpu().numpy()
  return np.asarray(v)
