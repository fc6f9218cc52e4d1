import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# The suite is bound by XLA compiling on CPU. Compile flags do not fix that without changing
# what is tested (2 AVX2 cores): XLA_FLAGS=--xla_backend_optimization_level=0 cuts a cold
# compile of the training step 65 -> 37 s and test_codec + test_context 313 -> 220 s, but
# changes float32 results (the parity test's bits moved 3e-6 relative against 1e-7, past
# its 1e-6 bound); level 1, --xla_cpu_use_fusion_emitters=false or
# --xla_llvm_disable_expensive_passes=true saved nothing, and XLA's own convolution kernels
# instead of YNNPACK's (the training flag, msinn_jax.tools.common) some 7%, too little to
# test the codec on other kernels than the ones `msinn compress` uses.

# Random-number quality does not matter for test weights, and the counter-based default
# (threefry) triples the XLA compile time of `Module.init` on CPU.
jax.config.update("jax_default_prng_impl", "unsafe_rbg")

# One persistent compilation cache for the session, shared by this process and the
# training subprocesses. The tests build many models and codecs of the same few small
# configurations, and every new `jax.jit` wrapper of an identical program would compile it
# again (seconds to minutes each on a slow 2-core CPU); with the cache, it compiles once.
# Fresh for each session and removed at exit, so no run sees another's programs. Under
# pytest-xdist the workers use the controller's: they start after it has loaded this file,
# and inherit its environment.
JAX_CACHE = os.environ.get("MSINN_TESTS_JAX_CACHE")
if JAX_CACHE is None:
  JAX_CACHE = tempfile.mkdtemp(prefix="msinn-tests-jax-cache-")
  os.environ["MSINN_TESTS_JAX_CACHE"] = JAX_CACHE
  atexit.register(shutil.rmtree, JAX_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Subprocesses (training runs, `msinn` commands) use it too, never a cache in the home folder.
os.environ["JAX_COMPILATION_CACHE_DIR"] = JAX_CACHE
os.environ.pop("MSINN_COMPILATION_CACHE", None)


# pytest-xdist (pyproject.toml: `-n auto --maxprocesses 4 --dist loadfile`) runs each
# module whole on one worker, handing modules out in collection order: the longest go
# first (`--durations` on 2 AVX2 cores), so that the last to start is a short one. test_codec
# comes between the two training modules so that one of them trains the shared reference
# run (`reference`) while the other worker compiles codecs instead of waiting for it.
LONGEST_FIRST = ("test_train.py", "test_codec.py", "test_train_parallel.py", "test_context.py",
                 "test_portable.py", "test_flow.py", "test_compute_dtype.py",
                 "test_invertibility.py", "test_parity.py", "test_eval.py", "test_demo.py",
                 "test_cli_codec.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: else as found.


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> str:
  """The small test model (`helpers.SMALL`, weights from `init_model` on a 64x64 image)
  as a weights file, one path for the whole session. The codec tests, `msinn
  compress`/`decompress`/`eval`/`reencode` all load it through `cached_codec`, which
  keeps the codecs of the two most recent paths (this one and the demo's default model):
  its programs are traced and compiled once for the session, not once per test module."""
  from helpers import image, init_model, SMALL
  from msinn_jax.train.portable import save_weights
  _, variables = init_model(SMALL, image(0, 1, 64, 64))
  path = tmp_path_factory.mktemp("small") / "small.npz"
  save_weights(path, variables["params"], SMALL, card={})
  return str(path)


# Training runs shared by tests/test_train.py and tests/test_train_parallel.py: the
# compilation cache above, one folder of images and one reference run per session.


@pytest.fixture(scope="session")
def cache_dir() -> pathlib.Path:
  return pathlib.Path(JAX_CACHE)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> pathlib.Path:
  import train_runs
  return train_runs.image_folder(tmp_path_factory)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, image_folder, cache_dir) -> pathlib.Path:
  import train_runs
  return train_runs.reference_run(tmp_path_factory, image_folder, cache_dir)
