"""Builders: ONNX export, TensorRT engines, the build manifest, `griffin-trt build`.

Importing this package is light (no torch/onnx/tensorrt); each module imports what it needs.
"""
