"""Model configuration: the official constructor's options, plus what follows from them.

`ModelConfig` mirrors the keyword arguments of the official `MSINNCompression.__init__`
(hytu99/MSINN-VRLIC, `models/msinn.py`) and derives the channel arithmetic that the
official code hard-codes (`channel_split=[48, 48, 24, 12, 6]`, `input_dim=3*4`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

FLOW_PERMUTATIONS = ("invconv", "invconv_lu", "shuffle", "reverse", "cross")
FLOW_COUPLINGS = ("affine", "additive")
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of one MSINN model.

  Attributes:
    N: hidden width of the coupling conditioners of the first `len(depths) - 1` stages.
    M: hidden width of the conditioners of the last (coarsest) stage.
    depths: number of invertible units per stage, finest stage first.
    flow_permutation: channel mixing of each unit: "invconv" (the official plain
      matrix), "invconv_lu" (LU-parameterised), or a fixed permutation "shuffle",
      "reverse", "cross".
    flow_coupling: "affine" or "additive".
    use_act_norm: whether each unit starts with ActNorm.
    post_process: whether the U-Net post-filter refines the reconstruction.
    lrp: whether latent residual prediction corrects each decoded slice.
    sc_type: spatial context: "multi_ckbd" (the paper's multistage checkerboard stack)
      or "ckbd_k<K>" (one checkerboard masked conv of kernel K).
    spatial_context_num: how many of the last slices (finest first counted from the end)
      use the spatial context; 5 = all of them for the paper configuration.
    anchor_num: number of rate anchors (gain vectors): 8 or 12 in the paper.
    context_width: hidden width of the channel-context, spatial-context and LRP networks
      (the official `internal_channel = 128`); the entropy-parameter networks' widths
      follow each slice's channels instead.
    in_channels: image channels.
    compute_dtype: dtype of the activations inside the networks outside the flow
      (context, entropy-parameter and LRP networks, post-filter): "float32", or
      "bfloat16" for speed on accelerators. Each returns its result in float32; the
      parameters, the whole flow (its conditioners at HIGHEST precision, see
      `flow/coupling.py`), gains, quantisation and likelihoods stay float32, so the flow
      stays exactly invertible either way.
  """

  N: int = 128
  M: int = 192
  depths: tuple[int, ...] = (4, 4, 4, 4)
  flow_permutation: str = "invconv"
  flow_coupling: str = "affine"
  use_act_norm: bool = True
  post_process: bool = True
  lrp: bool = True
  sc_type: str = "multi_ckbd"
  spatial_context_num: int = 5
  anchor_num: int = 8
  context_width: int = 128
  in_channels: int = 3
  compute_dtype: str = "float32"

  def __post_init__(self):
    object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
    if self.flow_permutation not in FLOW_PERMUTATIONS:
      raise ValueError(
          f"flow_permutation={self.flow_permutation!r}; choose one of {FLOW_PERMUTATIONS}")
    if self.flow_coupling not in FLOW_COUPLINGS:
      raise ValueError(f"flow_coupling={self.flow_coupling!r}; choose one of {FLOW_COUPLINGS}")
    if not self.depths or min(self.depths) < 1:
      raise ValueError(f"depths={self.depths}: every stage needs at least one unit")
    self.sc_kernel_size  # Validates sc_type.
    if not 0 <= self.spatial_context_num <= self.num_slices:
      raise ValueError(f"spatial_context_num must be in [0, {self.num_slices}]")
    if self.anchor_num < 1:
      raise ValueError("anchor_num must be >= 1")
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype={self.compute_dtype!r}; choose one of {COMPUTE_DTYPES}")

  @property
  def network_dtype(self) -> str | None:
    """The dtype the networks run in; None: their inputs' (float32, or float64 in the
    invertibility report)."""
    return None if self.compute_dtype == "float32" else self.compute_dtype

  # --- Derived channel arithmetic -----------------------------------------------------

  @property
  def num_stages(self) -> int:
    return len(self.depths)

  @property
  def num_slices(self) -> int:
    """Number of latents: one per stage, and the last stage's split gives two."""
    return self.num_stages + 1

  @property
  def stage_channels(self) -> tuple[int, ...]:
    """Channels entering each stage after its squeeze: 12, 24, 48, 96 for RGB."""
    return tuple(self.in_channels * 4 * 2**s for s in range(self.num_stages))

  @property
  def stage_hidden(self) -> tuple[int, ...]:
    return tuple(self.M if s == self.num_stages - 1 else self.N for s in range(self.num_stages))

  @property
  def latent_channels(self) -> tuple[int, ...]:
    """Channels of the g_a outputs in analysis order (finest first): 6, 12, 24, 48, 48."""
    halves = tuple(c // 2 for c in self.stage_channels)
    return halves + (halves[-1],)

  @property
  def slice_channels(self) -> tuple[int, ...]:
    """Channels of the latents in decoding order (coarsest first): 48, 48, 24, 12, 6."""
    return self.latent_channels[::-1]

  @property
  def slice_offsets(self) -> tuple[int, ...]:
    """Start of each slice in the concatenated gain vectors (decoding order)."""
    out, acc = [], 0
    for c in self.slice_channels:
      out.append(acc)
      acc += c
    return tuple(out)

  @property
  def total_latent_channels(self) -> int:
    return sum(self.slice_channels)

  def slice_scale(self, k: int) -> int:
    """Downsampling factor of slice k (decoding order): 16, 16, 8, 4, 2."""
    return 2 ** min(self.num_stages, self.num_slices - k)

  @property
  def pad_multiple(self) -> int:
    """Padding multiple of image sides: 64 for four stages, as the official evaluation
    (`compute_padding(min_div=2**6)`). The flow itself needs only 2**num_stages."""
    return 2 ** (self.num_stages + 2)

  @property
  def sc_kernel_size(self) -> int:
    if self.sc_type == "multi_ckbd":
      return 3
    if self.sc_type.startswith("ckbd_k"):
      k = int(self.sc_type[len("ckbd_k"):])
      if k % 2 == 1:
        return k
    raise ValueError(f"sc_type={self.sc_type!r}; choose 'multi_ckbd' or 'ckbd_k<odd K>'")

  def uses_spatial_context(self, k: int) -> bool:
    """Whether slice k is coded in two checkerboard phases (official test
    `num_iters - slice_index <= spatial_context_num`)."""
    return self.num_slices - k <= self.spatial_context_num

  # --- Serialisation ------------------------------------------------------------------

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["depths"] = list(self.depths)
    if d["compute_dtype"] == "float32":  # The official kwargs, and model ids, as before.
      del d["compute_dtype"]
    return d

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    """Builds a config from this class's fields or the official constructor kwargs."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise ValueError(f"unknown model config keys: {sorted(unknown)}")
    return cls(**d)


PAPER = ModelConfig(anchor_num=12)
"""The paper's wide-range configuration (anchor_num=12, lambda_max=1.8)."""
