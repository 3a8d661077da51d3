"""griffin-trt: GRIFFIN speculative decoding, built into engines and served by Triton."""

__version__ = "0.1.0"
