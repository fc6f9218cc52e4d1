import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))

# Random-number quality does not matter for test weights, and the counter-based default
# (threefry) triples the XLA compile time of `Module.init` on CPU.
jax.config.update("jax_default_prng_impl", "unsafe_rbg")
