import os
import sys

import pathlib

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Random-number quality does not matter for test weights, and the counter-based default
# (threefry) triples the XLA compile time of `Module.init` on CPU.
jax.config.update("jax_default_prng_impl", "unsafe_rbg")


# Training runs shared by tests/test_train.py and tests/test_train_parallel.py: one JAX
# compilation cache, one folder of images and one reference run per session.


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> pathlib.Path:
  import train_runs
  return train_runs.session_dir(tmp_path_factory, "jax_cache")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> pathlib.Path:
  import train_runs
  return train_runs.make_image_folder(train_runs.session_dir(tmp_path_factory, "images"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory, image_folder, cache_dir) -> pathlib.Path:
  import train_runs
  return train_runs.reference_run(tmp_path_factory, image_folder, cache_dir)
