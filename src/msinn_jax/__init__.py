"""msinn-jax."""
