"""The two TensorRT libraries an engine back end can use, and every way they differ for our code.

- `tensorrt`: datacenter TensorRT 10.x/11. Builds on a host with a CUDA GPU (the build queries it) for
  that GPU; the draft-tree plugin engines exist here; H100/H200 (SM90) are served only by it.
- `tensorrt-rtx`: TensorRT for RTX (`import tensorrt_rtx`). Builds ahead of time on any host, GPU or
  not, for the compute capabilities the recipe names (default: every one the library targets); kernels
  are compiled just in time on the GPU at first run and kept in a runtime cache beside the engines.
  No plugins: a deployment's tree steps run between the engines as the OpenAI-Triton kernels.
  Refuses SM90 (H100/H200).

Each back end's engines load only in the library (and version) that built them. The builder and
the executor read these facts from here; nothing else branches on the library's name.
Standard library only.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TrtLibrary:
    backend: str  # the recipe's / CLI's back-end value
    module: str  # what `import` loads
    label: str  # how messages name it
    builds_without_gpu: bool  # CPU-only ahead-of-time builds
    plugins: bool  # our draft-tree plugin engines can be built and loaded
    compute_capabilities: bool  # the builder targets the recipe's list, not the host's GPU
    runtime_cache: bool  # just-in-time kernels, kept in RUNTIME_CACHE beside the engines

    def load(self):
        """The library's Python module (ImportError when it is not installed)."""
        return importlib.import_module(self.module)


TENSORRT = TrtLibrary("tensorrt", "tensorrt", "TensorRT", builds_without_gpu=False, plugins=True,
                      compute_capabilities=False, runtime_cache=False)
TENSORRT_RTX = TrtLibrary("tensorrt-rtx", "tensorrt_rtx", "TensorRT-RTX", builds_without_gpu=True, plugins=False,
                          compute_capabilities=True, runtime_cache=True)
LIBRARIES = {lib.backend: lib for lib in (TENSORRT, TENSORRT_RTX)}
RUNTIME_CACHE = "runtime.cache"
# The API our source calls with TensorRT-RTX only ("Class.member", or "tensorrt.X" for module attributes,
# named as if `tensorrt`): datacenter TensorRT lacks it, and we never call it there (the library flags
# above). tests/_trt_bindings_check.py excuses it against datacenter TensorRT; tests/test_trt_rtx.py
# derives both directions from the source and compares them with these lists.
RTX_ONLY_API = (
    "tensorrt.ComputeCapability", "IBuilderConfig.num_compute_capabilities", "IBuilderConfig.set_compute_capability",
    "ICudaEngine.create_runtime_config", "tensorrt.IRuntimeConfig", "IRuntimeConfig.create_runtime_cache",
    "IRuntimeConfig.set_runtime_cache", "tensorrt.IRuntimeCache",
)
# ... and what only datacenter TensorRT has: the Python plugin API and its network flags (the draft-tree plugin).
DATACENTER_ONLY_API = ("tensorrt.plugin", "tensorrt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS",
                       "tensorrt.NetworkDefinitionCreationFlag.PREFER_JIT_PYTHON_PLUGINS")  # TensorRT-RTX's compiled kernels for the serving GPU, beside the engines


def library_for(backend: str) -> TrtLibrary | None:
    """The TensorRT library of an engine back end; None for torch / onnxruntime."""
    return LIBRARIES.get(backend)


def capability_name(cap: str) -> str:
    """'8.6' -> 'SM86': the name of TensorRT-RTX's ComputeCapability member."""
    major, minor = cap.split(".")
    return f"SM{major}{minor}"
