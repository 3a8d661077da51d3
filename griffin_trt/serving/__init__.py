"""Serving: filling the Triton model repository from a recipe and starting tritonserver.

Light on purpose: importing this package (or `server`) pulls neither torch nor transformers.
"""
