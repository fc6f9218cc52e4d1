"""The checkerboard spatial context (paper Sec. III-B); the channel context, which needs the
flow's hidden states, is `MSINN.slice_prior` in `model.py`."""
