"""Executors: how the decoding loop reaches the models (torch, onnxruntime, TensorRT, TensorRT-RTX).

The loop never imports a back end directly; `make_executor` picks one by name.
"""
from __future__ import annotations

from .base import Executor, ExecutorSpec


def make_executor(backend: str, **kwargs) -> Executor:
    if backend == "torch":
        from .torch_executor import TorchExecutor

        return TorchExecutor.from_paths(**kwargs)
    if backend == "onnxruntime":
        from .ort_executor import OrtExecutor

        return OrtExecutor.from_build_dir(**kwargs)
    if backend in ("tensorrt", "tensorrt-rtx"):
        from .trt_executor import TrtExecutor

        return TrtExecutor.from_build_dir(backend=backend, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; choose torch, onnxruntime, tensorrt or tensorrt-rtx")


__all__ = ["Executor", "ExecutorSpec", "make_executor"]
