"""The multi-scale spatial-channel context model (paper Sec. III-B)."""
