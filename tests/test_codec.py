"""Real bitstreams: bit-exact round trips, size against the model's estimate, and
clear errors for every kind of bad input."""

from __future__ import annotations

import dataclasses
import struct
import types
import zlib

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import image
from msinn_jax import codec as codec_lib
from msinn_jax import coding, schedule
from msinn_jax.codec import Codec, padding
from msinn_jax.errors import BitstreamError, UserError
from msinn_jax.model import MSINN
from msinn_jax.tools.common import cached_codec


@pytest.fixture(scope="module")
def codec(small_checkpoint):
  """The small test model's codec, the very one `msinn compress --checkpoint` uses."""
  return cached_codec(small_checkpoint)[0]


def _photo(h, w, seed=0):
  return np.asarray(np.round(image(seed, 1, h, w)[0] * 255), np.uint8)


def test_padding_is_centred_like_compressai():
  assert padding(481, 321, 64) == ((15, 16), (31, 32))
  assert padding(64, 128, 64) == ((0, 0), (0, 0))
  assert padding(1, 1, 64) == ((31, 32), (31, 32))


@pytest.mark.parametrize("h,w", [(17, 33), (1, 1), (64, 64)])
def test_round_trip_is_bit_exact_at_every_rate(codec, h, w):
  img = _photo(h, w, seed=h)
  sizes = []
  for rate in (0, 1, 2, 3, 0.5, 1.25, 2.9):
    enc = codec.compress(img, rate)
    dec = codec.decompress(enc.data)
    assert dec.image.shape == (h, w, 3) and dec.image.dtype == np.uint8
    np.testing.assert_array_equal(dec.image, enc.reconstruction)
    assert dec.rate == pytest.approx(rate)
    sizes.append(len(enc.data))
  assert sizes[0] < sizes[1] < sizes[2] < sizes[3]  # Rate controls the size.


@pytest.mark.slow
def test_round_trip_odd_size(codec):
  img = _photo(481, 321, seed=1)
  for rate in (0, 2.5):
    enc = codec.compress(img, rate)
    np.testing.assert_array_equal(codec.decompress(enc.data).image, enc.reconstruction)


def test_encoder_without_reconstruction_writes_the_same_bytes(codec, monkeypatch):
  img = _photo(17, 33, seed=17)
  full = codec.compress(img, 1.25)
  finished, outputs = [], []
  finish, output = codec._finish, codec._output
  monkeypatch.setattr(codec, "_finish", lambda *a, **kw: finished.append(kw["k"]) or
                      finish(*a, **kw))
  monkeypatch.setattr(codec, "_output", lambda *a: outputs.append(1) or output(*a))
  lean = codec.compress(img, 1.25, reconstruct=False)
  assert lean.data == full.data and lean.estimated_bits == full.estimated_bits
  assert lean.reconstruction is None
  # Neither the last slice's LRP and inverse flow nor the post-filter ran.
  assert finished == list(range(codec.config.num_slices - 1)) and outputs == []
  np.testing.assert_array_equal(codec.decompress(lean.data).image, full.reconstruction)


def test_encoding_time_stops_when_the_bytes_are_ready(codec, monkeypatch):
  # A clock that only moves while the post-filter runs: the encoder's time must not see it.
  now = [0.0]
  monkeypatch.setattr(codec_lib, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
  output = codec._output
  def slow_output(*a):
    now[0] += 1000.0
    return output(*a)
  monkeypatch.setattr(codec, "_output", slow_output)
  enc = codec.compress(_photo(17, 33, seed=3), 2)
  assert enc.seconds < 1000.0 and enc.reconstruction is not None
  assert codec.decompress(enc.data).seconds >= 1000.0  # The decoder's image is its output.


def test_rate_does_not_recompile(codec):
  img = _photo(40, 50)
  codec.compress(img, 1)
  fns = (codec._params, codec._finish, codec._symbols, codec._dequantize, codec._prior)
  before = [f._cache_size() for f in fns]
  for rate in (0, 0.3, 2.7, 3):
    codec.decompress(codec.compress(img, rate).data)
  assert [f._cache_size() for f in fns] == before


def _sample_image(codec, rate, h, w, seed):
  """An image whose latents are distributed exactly as the model predicts: ancestral
  sampling through the decoding schedule (symbols ~ discretised N(0, sigma)), then g_s."""
  rng = np.random.default_rng(seed)
  rate = jnp.full((1,), rate, jnp.float32)
  v, model = codec.variables, codec.model
  latents = {}

  def code(k, phase, mask, mu, sigma):
    gain = model.apply(v, "gain", k, rate, method=MSINN.gain_vector)
    s = np.maximum(np.asarray(sigma), 0.11)
    q = np.round(rng.normal(size=s.shape) * s)
    u = rng.uniform(-0.4, 0.4, size=s.shape)  # Keeps rounding away from ties.
    y = np.asarray(mu) + (q + u) / np.asarray(gain)
    latents[k] = np.where(mask, y, latents.get(k, 0.0))
    return codec._dequantize(v, k=k, q=jnp.asarray(q, jnp.int32), mu=mu, rate=rate)

  shapes = schedule.slice_shapes(codec.config, 1, h, w)
  schedule.run(codec.config, codec._ops(rate), shapes, code)
  ys = [jnp.asarray(latents[k], jnp.float32) for k in reversed(range(len(shapes)))]
  with jax.default_matmul_precision("highest"):
    x, _ = model.apply(v, ys, method=MSINN.synthesis)
  return x, rate


@pytest.fixture(scope="module")
def wide_codec(codec):
  """The test model with its predicted scales raised to a few quantisation steps (random
  weights predict near-zero scales: nothing to code)."""
  params = jax.tree_util.tree_map(lambda a: a, codec.variables["params"])
  for k, c in enumerate(codec.config.slice_channels):
    last = params[f"entropy_parameters_{k}"]["conv4"]
    last["bias"] = last["bias"].at[:c].add(1.5 + 0.5 * k)
  return Codec(codec.config, {"params": params})


@pytest.mark.parametrize("rate", [0, 1.5, 3])
def test_payload_size_matches_the_estimate(wide_codec, rate):
  codec = wide_codec
  x, rate_arr = _sample_image(codec, rate, 256, 256, seed=int(2 * rate))
  stages, estimated, _ = codec.encode_padded(x, rate_arr)
  payload = 8 * sum(len(s.payload) for s in stages)
  assert estimated > 20_000  # A real workload, not a degenerate all-zero one.
  # Each stage's range coder flushes to whole 32-bit words (at most 32 bits of framing
  # per stage, like the header); beyond that, 16-bit tables over 64 quantised scales
  # cost well under 1%.
  framing = 32 * len(stages)
  assert abs(payload - estimated) <= 0.01 * estimated + framing, (payload, estimated)


def test_header_is_small(codec):
  enc = codec.compress(_photo(64, 64), 1)
  assert enc.header_bytes == 34 + 12 * len(schedule.steps(codec.config)) + 4


# --- Bad streams -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream(codec):
  return codec.compress(_photo(20, 24, seed=3), 1.5).data


def test_streams_from_another_model_or_version_are_refused(codec, stream):
  other = Codec(codec.config, {"params": jax.tree_util.tree_map(lambda a: a * 1.0001,
                                                                codec.variables["params"])})
  with pytest.raises(BitstreamError, match="another model"):
    other.decompress(stream)
  bumped = bytearray(stream)
  bumped[4] = 2
  bumped[-4:] = struct.pack(">I", zlib.crc32(bytes(bumped[:-4])))
  with pytest.raises(BitstreamError, match="version 2"):
    codec.decompress(bytes(bumped))


def _repack(stream, **header_changes):
  """A stream with consistent checksums but changed header fields or payloads."""
  header, stages = coding.unpack(stream)
  payloads = header_changes.pop("payloads", None)
  if payloads is not None:
    stages = [coding.Stage(p, s.index_crc) for p, s in zip(payloads, stages)]
  return coding.pack(dataclasses.replace(header, **header_changes), stages)


def test_absurd_sizes_are_refused_before_allocating(codec, stream):
  big = bytearray(stream)
  big[17:21] = struct.pack(">I", 4_000_000_000)
  big[-4:] = struct.pack(">I", zlib.crc32(bytes(big[:-4])))
  with pytest.raises(BitstreamError):
    codec.decompress(bytes(big))
  # Within the format's limits and with valid checksums, but far beyond the codec's.
  forged = _repack(stream, height=65536, width=65536, padded_height=65536,
                   padded_width=65536)
  with pytest.raises(BitstreamError, match="limit"):
    codec.decompress(forged)
  with pytest.raises(BitstreamError, match="padding"):
    codec.decompress(_repack(stream, padded_height=128))  # The model pads 20 rows to 64.
  for bad in (b"", b"MSNN", stream[:40], stream[:-1]):
    with pytest.raises(BitstreamError):
      codec.decompress(bad)


@hypothesis.settings(max_examples=25, deadline=20_000,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_mutated_streams_never_crash(codec, stream, data):
  mutated = bytearray(stream)
  kind = data.draw(st.sampled_from(["flip", "byte", "truncate"]))
  if kind == "truncate":
    mutated = mutated[:data.draw(st.integers(0, len(stream) - 1))]
  else:
    pos = data.draw(st.integers(0, len(stream) - 1))
    if kind == "flip":
      mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
    else:
      mutated[pos] = data.draw(st.integers(0, 255))
  try:
    out = codec.decompress(bytes(mutated))
  except BitstreamError:
    return
  assert bytes(mutated) == stream or out.image.shape == (20, 24, 3)


@hypothesis.settings(max_examples=25, deadline=20_000,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_mutated_payloads_with_valid_checksums_never_crash(codec, stream, data):
  """Past the CRCs: corrupt payloads reach the range decoder and the index checks."""
  _, stages = coding.unpack(stream)
  payloads = [s.payload for s in stages]
  i = data.draw(st.integers(0, len(payloads) - 1))
  p = bytearray(payloads[i])
  if data.draw(st.booleans()) and p:
    p = p[:data.draw(st.integers(0, len(p) - 1))]
  elif p:
    p[data.draw(st.integers(0, len(p) - 1))] ^= 1 << data.draw(st.integers(0, 7))
  else:
    p = bytearray(data.draw(st.binary(min_size=1, max_size=8)))
  payloads[i] = bytes(p)
  try:
    out = codec.decompress(_repack(stream, payloads=payloads))
  except BitstreamError:
    return
  assert out.image.shape == (20, 24, 3)


def test_a_decoder_whose_floats_differ_stops_at_the_first_changed_stage(codec, stream,
                                                                         monkeypatch):
  """What decoding on another kind of device looks like: the same weights and model id, but
  the third stage's sigmas land one table entry higher. The decoder must stop there with a
  clear error, not decode the rest against the wrong distributions."""
  exact = codec._indexes
  calls = []

  def drifted(sigma):
    idx = exact(sigma)
    calls.append(None)
    return jnp.minimum(idx + 1, codec.tables.num_levels - 1) if len(calls) == 3 else idx

  monkeypatch.setattr(codec, "_indexes", drifted)
  k, phase = schedule.steps(codec.config)[2]
  with pytest.raises(BitstreamError, match=rf"slice {k} \({phase}\).*index checksum"):
    codec.decompress(stream)
  assert len(calls) == 3
  monkeypatch.undo()
  assert codec.decompress(stream).image.shape == (20, 24, 3)


def test_rates_outside_the_anchors_are_user_errors(codec):
  with pytest.raises(UserError, match="outside"):
    codec.compress(_photo(8, 8), 4.5)
  with pytest.raises(UserError, match="outside"):
    codec.compress(_photo(8, 8), float("nan"))
  with pytest.raises(UserError, match="uint8"):
    codec.compress(np.zeros((8, 8), np.uint8), 1)
  with pytest.raises(UserError, match="number"):
    codec.compress(_photo(8, 8), None)
