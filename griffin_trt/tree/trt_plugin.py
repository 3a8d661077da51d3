"""TensorRT plugins for the draft-tree ops, on the Python `tensorrt.plugin` API (IPluginV3 "quick" plugins).

Plugins (namespace `griffin`, version "1"):

- `griffin::DraftTreeExpand`   inputs scores [B,F], child_logp [B,F,C], child_ids [B,F,C]; attr top_k
  -> cand_scores [B,F*C], cand_ids [B,F*C], next_scores [B,K], next_ids [B,K], next_flat [B,K]
  (K = top_k, which must be <= F*C; ids/next_flat have child_ids' integer type)
- `griffin::DraftTreeFinalize` inputs root [B], cand_scores/ids/parents/depths [B,N]; attrs max_depth,
  total_tokens -> tokens, parents, depths [B,T], mask [B,T,T] (bool), retrieve [B,T,max_depth+1],
  num_leaves [B] (T = total_tokens, which must be <= N + 1; integer outputs have cand_ids' type)

Attributes are declared in alphabetical order: TensorRT's AOT path passes them to `aot_impl`
positionally in plugin-field order, and both the ONNX builder and the parser keep that order.

Each has an `aot_impl` (the OpenAI-Triton kernel from `kernels.py` compiled to PTX; TensorRT embeds it
in the engine and launches it without Python) and an `impl` (JIT: the same kernel launched from
Python at run time). ONNX nodes map to them when op_type is the plugin name and the node carries
`plugin_namespace="griffin"` (see `griffin_trt/builders/draft_tree_onnx.py`).

TensorRT is imported lazily: importing this module never fails. `load_plugin()` registers both
plugins (idempotent) and raises `PluginUnavailable` naming the TensorRT version found and what is
needed when TensorRT (>= 10.9 with `tensorrt.plugin.aot_impl`) or triton is missing. Importing the
module registers them when it can.

No `from __future__ import annotations` here: `tensorrt.plugin` reads the register/impl functions'
annotations with `inspect.signature` and does not evaluate strings (it then refuses to register).
tests/test_trt_bindings.py checks all of this against the real bindings of several versions.

The PTX helpers (`expand_signature`, `compile_kernel`, ...) need no TensorRT and no GPU (triton
compiles for an explicit target on a CPU host), so they are tested everywhere.
"""
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Any

PLUGIN_NAMESPACE = "griffin"
PLUGIN_VERSION = "1"
EXPAND_NAME = "DraftTreeExpand"
FINALIZE_NAME = "DraftTreeFinalize"
EXPAND_ID = f"{PLUGIN_NAMESPACE}::{EXPAND_NAME}"
FINALIZE_ID = f"{PLUGIN_NAMESPACE}::{FINALIZE_NAME}"

# Compile-time blocks of the AOT kernels (shapes may be dynamic at build time, the kernels loop).
AOT_EXPAND_BLOCKS = {"BLOCK_I": 64, "BLOCK_J": 128}
AOT_FINALIZE_BLOCKS = {"BLOCK_I": 64, "BLOCK_J": 128}

# TensorRT versions with the Python plugin API this module uses (aot_impl, PREFER_*_PYTHON_PLUGINS).
MIN_TENSORRT = (10, 9)

_STATE: dict[str, Any] = {"registered": False, "error": None}


class PluginUnavailable(RuntimeError):
    """TensorRT (or its Python plugin API, or triton) is not usable in this process."""


# ------------------------------------------------------------------------------------------------
# PTX side: no TensorRT needed


@dataclass
class CompiledPTX:
    name: str
    ptx: str
    num_warps: int
    shared: int
    n_params: int  # kernel parameters after stripping Triton's unused scratch pointers


def _p2(x: int, lo: int = 16) -> int:
    x = max(1, int(x))
    return max(lo, 1 << (x - 1).bit_length())


def expand_signature(score_ty: str = "fp32", logp_ty: str | None = None, id_ty: str = "i64") -> dict[str, str]:
    """Triton signature of `expand_kernel` (tensor inputs, i32 scalars, tensor outputs, constexprs)."""
    logp_ty = logp_ty or score_ty
    return {
        "scores_ptr": f"*{score_ty}", "logp_ptr": f"*{logp_ty}", "ids_ptr": f"*{id_ty}",
        "F": "i32", "C": "i32", "K": "i32",
        "cand_ptr": f"*{score_ty}", "cand_ids_ptr": f"*{id_ty}", "next_scores_ptr": f"*{score_ty}",
        "next_ids_ptr": f"*{id_ty}", "next_flat_ptr": f"*{id_ty}",
        "BLOCK_I": "constexpr", "BLOCK_J": "constexpr",
    }


def finalize_signature(score_ty: str = "fp32", id_ty: str = "i64", mask_ty: str = "i1") -> dict[str, str]:
    """Triton signature of `finalize_kernel`; all integer tensors share `id_ty`."""
    return {
        "root_ptr": f"*{id_ty}", "cs_ptr": f"*{score_ty}", "cid_ptr": f"*{id_ty}", "cpar_ptr": f"*{id_ty}",
        "cdep_ptr": f"*{id_ty}", "N": "i32", "T": "i32", "MAX_DEPTH": "i32",
        "tokens_ptr": f"*{id_ty}", "parents_ptr": f"*{id_ty}", "depths_ptr": f"*{id_ty}", "mask_ptr": f"*{mask_ty}",
        "retrieve_ptr": f"*{id_ty}", "nleaves_ptr": f"*{id_ty}",
        "BLOCK_I": "constexpr", "BLOCK_J": "constexpr", "BLOCK_T": "constexpr", "BLOCK_D": "constexpr",
    }


def finalize_constexprs(total_tokens: int, max_depth: int) -> dict[str, int]:
    return {**AOT_FINALIZE_BLOCKS, "BLOCK_T": _p2(total_tokens), "BLOCK_D": _p2(max_depth + 1, 2)}


def cuda_target(arch: int | None = None):
    """triton GPUTarget: explicit arch, else $GRIFFIN_CUDA_ARCH, else the current GPU, else sm_90."""
    from triton.backends.compiler import GPUTarget

    if arch is None and os.environ.get("GRIFFIN_CUDA_ARCH"):
        arch = int(os.environ["GRIFFIN_CUDA_ARCH"])
    if arch is None:
        try:
            import torch

            if torch.cuda.is_available():
                major, minor = torch.cuda.get_device_capability()
                arch = major * 10 + minor
        except Exception:  # noqa: BLE001 - any failure: fall back to the default
            arch = None
    return GPUTarget("cuda", arch or 90, 32)


def strip_unused_params(ptx: str, name: str, keep: int) -> str:
    """Drop kernel parameters >= `keep` from the PTX entry when the body never reads them.

    Triton >= 3.3 appends global/profile scratch pointers to every kernel; TensorRT's AOT launch
    passes only (inputs, extra scalars, outputs). With zero scratch they are never loaded, so they
    are removed rather than left for cuLaunchKernel to read past TensorRT's argument array.
    """
    params = re.findall(rf"\.param\s+[^\n]*?\b({re.escape(name)}_param_(\d+))", ptx)
    extra = [(p, int(i)) for p, i in params if int(i) >= keep]
    if not extra:
        return ptx
    for p, _ in extra:
        if re.search(rf"\[{re.escape(p)}(\+\d+)?\]", ptx):
            raise ValueError(f"kernel {name} reads parameter {p}; it cannot be stripped")
    lines = ptx.split("\n")
    out = [ln for ln in lines if not any(re.search(rf"\.param\b.*\b{re.escape(p)}\b", ln) for p, _ in extra)]
    text = "\n".join(out)
    last = f"{name}_param_{keep - 1}"
    # the last kept parameter must not end with a comma any more
    text = re.sub(rf"(\.param[^\n]*\b{re.escape(last)}),(\s*\n\s*\))", r"\1\2", text)
    return text


def compile_kernel(kernel, signature: dict[str, str], constexprs: dict[str, int], arch: int | None = None,
                   num_warps: int = 4, ptx_version: int | None = None) -> CompiledPTX:
    """Compile a @triton.jit kernel to PTX for TensorRT (works on CPU hosts: no driver needed).

    The PTX targets one GPU arch (`cuda_target`). The driver JIT-compiles it when TensorRT loads
    the engine, so its ISA version must not exceed what the driver supports: triton emits the
    newest its ptxas knows unless `ptx_version` (or $GRIFFIN_PTX_VERSION, e.g. 84 for a CUDA 12.4
    driver) says otherwise.
    """
    import triton

    if not hasattr(kernel, "arg_names") or type(kernel).__name__ == "InterpretedFunction":
        raise RuntimeError("kernels were created under TRITON_INTERPRET=1; compile PTX in a process without it")
    src = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    options: dict[str, Any] = {"num_warps": num_warps}
    if ptx_version is None and os.environ.get("GRIFFIN_PTX_VERSION"):
        ptx_version = int(os.environ["GRIFFIN_PTX_VERSION"])
    if ptx_version is not None:
        options["ptx_version"] = int(ptx_version)
    ck = triton.compile(src, target=cuda_target(arch), options=options)
    meta = ck.metadata
    for attr in ("global_scratch_size", "profile_scratch_size"):
        if getattr(meta, attr, 0):
            raise RuntimeError(f"kernel {meta.name} needs {attr}={getattr(meta, attr)}: unsupported in TensorRT AOT")
    n_runtime = sum(1 for v in signature.values() if v != "constexpr")
    ptx = strip_unused_params(ck.asm["ptx"], meta.name, n_runtime)
    return CompiledPTX(meta.name, ptx, meta.num_warps, meta.shared, n_runtime)


def compile_expand(score_ty: str = "fp32", id_ty: str = "i64", logp_ty: str | None = None, arch: int | None = None,
                   ptx_version: int | None = None) -> CompiledPTX:
    from .kernels import expand_kernel

    return compile_kernel(expand_kernel, expand_signature(score_ty, logp_ty, id_ty), dict(AOT_EXPAND_BLOCKS), arch,
                          ptx_version=ptx_version)


def compile_finalize(total_tokens: int, max_depth: int, score_ty: str = "fp32", id_ty: str = "i64",
                     arch: int | None = None, ptx_version: int | None = None) -> CompiledPTX:
    from .kernels import finalize_kernel

    return compile_kernel(finalize_kernel, finalize_signature(score_ty, id_ty),
                          finalize_constexprs(total_tokens, max_depth), arch, ptx_version=ptx_version)


# ------------------------------------------------------------------------------------------------
# TensorRT side


def _tensorrt_version() -> str | None:
    try:
        return importlib.import_module("tensorrt").__version__
    except Exception:  # noqa: BLE001 - absent or broken: both mean "not usable"
        return None


def unavailable_reason() -> str | None:
    """Why the plugins cannot register in this process (naming the TensorRT found), or None."""
    need = (f"the griffin draft-tree plugins need TensorRT >= {MIN_TENSORRT[0]}.{MIN_TENSORRT[1]} with the Python "
            "plugin API (tensorrt.plugin with aot_impl) and OpenAI triton")
    version = _tensorrt_version()
    if version is None:
        return f"{need}; `import tensorrt` fails here (install the `trt` extra on a GPU host)"
    if importlib.util.find_spec("triton") is None:
        return f"{need}; TensorRT {version} is here but triton is not installed"
    try:
        import numpy.typing  # noqa: F401  (tensorrt.plugin uses np.typing without importing it; numpy 1.x)

        trtp = importlib.import_module("tensorrt.plugin")
    except Exception as e:  # noqa: BLE001
        return (f"{need}; TensorRT {version} is here but `import tensorrt.plugin` fails ({type(e).__name__}: {e}); "
                "pip's split tensorrt packages ship it from 10.14 on, NVIDIA's tar/container installs from 10.9")
    if not (hasattr(trtp, "aot_impl") and hasattr(trtp, "register")):
        return f"{need}; TensorRT {version} has no tensorrt.plugin.aot_impl"
    return None


def is_available() -> bool:
    """True when tensorrt with the Python plugin API (incl. aot_impl) and triton are importable."""
    return unavailable_reason() is None


def torch_view(x, device: str = "cuda"):
    """A torch tensor over a `tensorrt.plugin.Tensor`'s memory (no copy), bf16 included.

    TensorRT's own `__cuda_array_interface__` refuses bf16, so this builds the interface from the
    tensor's public fields with a same-size carrier type and reinterprets it (`view`). `device="cpu"`
    reads host memory through numpy's array interface (tests).
    """
    import numpy as np
    import torch

    trt = importlib.import_module("tensorrt")
    carrier = {trt.float32: ("<f4", None), trt.float16: ("<f2", None), trt.bfloat16: ("<i2", torch.bfloat16),
               trt.int32: ("<i4", None), trt.int64: ("<i8", None), trt.int8: ("|i1", None), trt.bool: ("|b1", None),
               trt.uint8: ("|u1", None)}
    if x.dtype not in carrier:
        raise ValueError(f"the griffin tree plugins do not take {x.dtype} tensors")
    typestr, view = carrier[x.dtype]
    size = np.dtype(typestr).itemsize
    iface = {"shape": tuple(x.shape), "typestr": typestr, "data": (int(x.data_ptr), False),
             "strides": tuple(int(s) * size for s in x.strides), "version": 3}
    if device == "cpu":
        t = torch.from_numpy(np.asarray(type("HostArray", (), {"__array_interface__": iface})()))
    else:
        t = torch.as_tensor(type("CudaArray", (), {"__cuda_array_interface__": iface})(), device=device)
    return t.view(view) if view is not None else t


def _triton_type(trt, dtype) -> str:
    table = {
        trt.float32: "fp32", trt.float16: "fp16", trt.bfloat16: "bf16",
        trt.int32: "i32", trt.int64: "i64", trt.int8: "i8", trt.bool: "i1",
    }
    if dtype not in table:
        raise ValueError(f"unsupported tensor type {dtype} for the griffin tree plugins")
    return table[dtype]


def _register(trt, trtp) -> None:
    from typing import Tuple, Union

    Desc = trtp.TensorDesc

    # ---- DraftTreeExpand ----
    @trtp.register(EXPAND_ID)
    def _expand_desc(scores: Desc, child_logp: Desc, child_ids: Desc, top_k: int) -> Tuple[Desc, Desc, Desc, Desc, Desc]:
        b = scores.shape_expr[0]
        m = child_logp.shape_expr[1] * child_logp.shape_expr[2]
        return (
            trtp.from_shape_expr((b, m), dtype=scores.dtype),
            trtp.from_shape_expr((b, m), dtype=child_ids.dtype),
            trtp.from_shape_expr((b, top_k), dtype=scores.dtype),
            trtp.from_shape_expr((b, top_k), dtype=child_ids.dtype),
            trtp.from_shape_expr((b, top_k), dtype=child_ids.dtype),
        )

    @trtp.aot_impl(EXPAND_ID)
    def _expand_aot(
        scores: Desc, child_logp: Desc, child_ids: Desc, top_k: int, outputs: Tuple[Desc], tactic: int
    ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        k = compile_expand(_triton_type(trt, scores.dtype), _triton_type(trt, child_ids.dtype),
                           logp_ty=_triton_type(trt, child_logp.dtype))
        b = scores.shape_expr[0]
        f = child_logp.shape_expr[1]
        c = child_logp.shape_expr[2]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = b
        launch.grid_y = trtp.cdiv(f * c, AOT_EXPAND_BLOCKS["BLOCK_I"])
        launch.block_x = k.num_warps * 32
        launch.shared_mem = k.shared
        extra = trtp.SymIntExprs(3)
        extra[0] = trtp.SymInt32(f)
        extra[1] = trtp.SymInt32(c)
        extra[2] = trtp.SymInt32(top_k)
        return k.name, k.ptx, launch, extra

    @trtp.impl(EXPAND_ID)
    def _expand_impl(scores, child_logp, child_ids, top_k: int, outputs, stream: int) -> None:
        import torch

        from .kernels import launch_expand

        t = [torch_view(x) for x in (scores, child_logp, child_ids, *outputs)]
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            launch_expand(*t[:3], top_k, *t[3:])

    # ---- DraftTreeFinalize ----
    @trtp.register(FINALIZE_ID)
    def _finalize_desc(
        root: Desc, cand_scores: Desc, cand_ids: Desc, cand_parents: Desc, cand_depths: Desc, max_depth: int, total_tokens: int
    ) -> Tuple[Desc, Desc, Desc, Desc, Desc, Desc]:
        b = cand_scores.shape_expr[0]
        it = cand_ids.dtype
        return (
            trtp.from_shape_expr((b, total_tokens), dtype=it),
            trtp.from_shape_expr((b, total_tokens), dtype=it),
            trtp.from_shape_expr((b, total_tokens), dtype=it),
            trtp.from_shape_expr((b, total_tokens, total_tokens), dtype=trt.bool),
            trtp.from_shape_expr((b, total_tokens, max_depth + 1), dtype=it),
            trtp.from_shape_expr((b,), dtype=it),
        )

    @trtp.aot_impl(FINALIZE_ID)
    def _finalize_aot(
        root: Desc, cand_scores: Desc, cand_ids: Desc, cand_parents: Desc, cand_depths: Desc,
        max_depth: int, total_tokens: int, outputs: Tuple[Desc], tactic: int,
    ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        types = {_triton_type(trt, d.dtype) for d in (root, cand_ids, cand_parents, cand_depths)}
        if len(types) != 1:
            raise ValueError(f"DraftTreeFinalize: root/cand_ids/cand_parents/cand_depths must share one int type, got {types}")
        k = compile_finalize(total_tokens, max_depth, _triton_type(trt, cand_scores.dtype), types.pop())
        launch = trtp.KernelLaunchParams()
        launch.grid_x = cand_scores.shape_expr[0]
        launch.block_x = k.num_warps * 32
        launch.shared_mem = k.shared
        extra = trtp.SymIntExprs(3)
        extra[0] = trtp.SymInt32(cand_scores.shape_expr[1])
        extra[1] = trtp.SymInt32(total_tokens)
        extra[2] = trtp.SymInt32(max_depth)
        return k.name, k.ptx, launch, extra

    @trtp.impl(FINALIZE_ID)
    def _finalize_impl(root, cand_scores, cand_ids, cand_parents, cand_depths, max_depth: int, total_tokens: int,
                       outputs, stream: int) -> None:
        import torch

        from .kernels import launch_finalize

        ins = [torch_view(x) for x in (root, cand_scores, cand_ids, cand_parents, cand_depths)]
        outs = [torch_view(x) for x in outputs]
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            launch_finalize(*ins, max_depth, *outs)


def load_plugin() -> None:
    """Register griffin::DraftTreeExpand / griffin::DraftTreeFinalize with TensorRT (idempotent).

    Call before parsing ONNX graphs that use them and before deserializing engines built with the
    JIT (`impl`) path. Raises PluginUnavailable, naming the TensorRT version found and what is
    needed, when the plugins cannot register.
    """
    if _STATE["registered"]:
        return
    if _STATE["error"]:
        raise PluginUnavailable(_STATE["error"])
    reason = unavailable_reason()
    if reason:
        raise PluginUnavailable(reason + ". Without TensorRT use griffin_trt.tree.kernels (direct Triton launches) "
                                "or the torch reference.")
    trt = importlib.import_module("tensorrt")
    trtp = importlib.import_module("tensorrt.plugin")
    try:
        ns = trtp.op.define_or_get(PLUGIN_NAMESPACE)
        if not (hasattr(ns, EXPAND_NAME) and hasattr(ns, FINALIZE_NAME)):  # else: this module was reloaded
            _register(trt, trtp)
    except Exception as e:  # noqa: BLE001 - any refusal of tensorrt.plugin: say which TensorRT refused
        _STATE["error"] = (f"TensorRT {trt.__version__} refused to register the griffin draft-tree plugins: "
                           f"{type(e).__name__}: {e}")
        raise PluginUnavailable(_STATE["error"]) from e
    _STATE["registered"] = True


def network_flags(prefer: str = "aot", strongly_typed: bool = True) -> int:
    """Flags for `builder.create_network(...)` when a graph holds these plugins.

    Both an `impl` and an `aot_impl` are registered, so TensorRT needs PREFER_AOT_PYTHON_PLUGINS
    (embed the PTX; no Python when the engine runs) or PREFER_JIT_PYTHON_PLUGINS (Python callback).
    """
    trt = importlib.import_module("tensorrt")
    f = trt.NetworkDefinitionCreationFlag
    flag = {"aot": f.PREFER_AOT_PYTHON_PLUGINS, "jit": f.PREFER_JIT_PYTHON_PLUGINS}[prefer]
    return ((1 << int(f.STRONGLY_TYPED)) if strongly_typed else 0) | (1 << int(flag))


def plugin_creator_names() -> list[str]:
    """Names TensorRT's registry knows in our namespace (after load_plugin)."""
    trt = importlib.import_module("tensorrt")
    return [c.name for c in trt.get_plugin_registry().all_creators if getattr(c, "plugin_namespace", "") == PLUGIN_NAMESPACE]


# Register on import when TensorRT is present; never fail the import (load_plugin() raises again).
if is_available():
    try:
        load_plugin()
    except PluginUnavailable:
        pass
