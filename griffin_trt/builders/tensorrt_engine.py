"""Strongly typed TensorRT engines from the exported ONNX graphs, with datacenter TensorRT 10.x/11
(GPU hosts) or TensorRT-RTX (any host: ahead-of-time builds); trt_library.py lists how they differ.

Imported lazily: `available()` is the only function safe to call anywhere; it imports the library
inside a try. Precision comes from the ONNX graph (strongly typed network: TensorRT 11 removed the
fp16/bf16/int8/fp8 builder flags), so the engine computes in the recipe's dtype.

Attention: the graphs carry ONNX `Attention` (opset 23+), which the parser turns into an IAttention.
TensorRT's fused attention kernels exist for float16/bfloat16 (and FP8/INT8) only; a non-decomposable
IAttention without a fused kernel fails the build ("Attention operation was not supported by a
dedicated kernel"), which is what every float32 graph hit. Every IAttention is therefore marked
decomposable: where a fused kernel exists TensorRT still uses it, elsewhere (float32) it runs as
BMM + softmax + BMM.

Optimization profiles (batch 1..max_batch in all of them):

- target:  0 prefill (T 1..max_input_len), 1 verify (T 1..tree_size; plain decoding is T = 1)
- drafter: 0 prefill (T 1..max_input_len), 1 update (T 1..max_accept, the accepted path),
           2 frontier (T 1..max(top_k, nodes of one static-tree level))

`profiles_for` describes them once; the TensorRT executor reads the ranges back from the engine.
The timing cache is loaded before and saved after every datacenter build so rebuilds are fast (a
no-op in TensorRT-RTX). Engines are written atomically (temp file + rename).

In-place graphs (builders/kv_layout.py, TensorRT >= 10.15, TensorRT-RTX): the parser lowers each
cache's TensorScatter to a KV-cache update layer, whose output shares the cache input's memory. The
parsed network must show one such layer per cache, from the cache input to its output (checked
before building); datacenter builds also deserialize the engine once to check that
`get_aliased_input_tensor` reports each pair (that needs a GPU: TensorRT-RTX engines are checked at
load). A build where either check fails stops with a message (rebuild with `--kv-flavour copy`).

`build_engine` returns what the built network and config say about the engine (`network_summary`):
I/O names, dtypes, shapes, profile ranges, KV-cache update pairs, attention layers. The manifest
keeps it, so a host without the library's runtime can still see what the executor must bind.
The draft-tree plugin graphs are parsed with PREFER_AOT_PYTHON_PLUGINS (the PTX goes into the
engine); a plugin that cannot register stops the build naming the TensorRT version found.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .trt_library import TENSORRT, TrtLibrary, capability_name

if TYPE_CHECKING:  # string annotations name TensorRT's classes; never imported at run time here
    import tensorrt as trt

log = logging.getLogger(__name__)

TARGET_ENGINE = "target.plan"
DRAFTER_ENGINE = "drafter.plan"
WORKSPACE_FRACTION = 0.5  # of free GPU memory, capped below
WORKSPACE_CAP = 16 << 30
FP8_MIN_CAPABILITY = (8, 9)


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine; the message carries the parser/builder errors."""


def available(library: TrtLibrary = TENSORRT) -> tuple[bool, str]:
    """(True, version) when the library imports and can build here (datacenter TensorRT: torch sees a
    CUDA GPU; TensorRT-RTX: any host), else (False, reason)."""
    try:
        trt = library.load()
    except Exception as e:  # noqa: BLE001 - missing, or a broken install
        return False, f"`import {library.module}` failed: {type(e).__name__}: {e}"
    if library.builds_without_gpu:
        return True, trt.__version__
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return False, f"`import torch` failed: {e}"
    if not torch.cuda.is_available():
        return False, f"{library.label} {trt.__version__} is installed but torch sees no CUDA GPU"
    return True, trt.__version__


def profiles_for(recipe) -> dict[str, list[dict]]:
    """Token-axis ranges per graph and profile: [{"name", "min", "opt", "max"}] (batch is separate)."""
    tree, lim = recipe.tree, recipe.limits
    frontier = tree.top_k
    if tree.choices:  # a static tree drafts one level per pass
        per_level: dict[int, int] = {}
        for c in tree.choices:
            per_level[len(c)] = per_level.get(len(c), 0) + 1
        frontier = max(frontier, max(per_level.values()))
    return {
        "target": [
            {"name": "prefill", "min": 1, "opt": lim.max_input_len, "max": lim.max_input_len},
            {"name": "verify", "min": 1, "opt": tree.tree_size, "max": tree.tree_size},
        ],
        "drafter": [
            {"name": "prefill", "min": 1, "opt": lim.max_input_len, "max": lim.max_input_len},
            {"name": "update", "min": 1, "opt": tree.max_accept, "max": tree.max_accept},
            {"name": "frontier", "min": 1, "opt": frontier, "max": frontier},
        ],
    }


# ------------------------------------------------------------------------------------- plugins


def graph_plugin_ops(path: Path) -> list[str]:
    """`namespace::op` of every node in an ONNX graph that maps to a TensorRT plugin."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = set()
    for node in model.graph.node:
        for a in node.attribute:
            if a.name == "plugin_namespace":
                ops.add(f"{a.s.decode() if isinstance(a.s, bytes) else a.s}::{node.op_type}")
    return sorted(ops)


def load_plugins(trt, logger, required: list[str]) -> tuple[list[str], int]:
    """TensorRT's own plugins, and the draft-tree plugins when a graph uses them (`required`).

    Returns (notes, creation flags for networks holding our plugins). A required plugin that cannot
    register is an EngineBuildError naming the TensorRT version found and what is needed.
    """
    trt.init_libnvinfer_plugins(logger, "")
    if not required:
        return [], strongly_typed(trt)
    from ..tree import trt_plugin

    try:
        trt_plugin.load_plugin()
    except trt_plugin.PluginUnavailable as e:
        raise EngineBuildError(f"the draft-tree graphs use the plugins {required}, which cannot register: {e}") from e
    return [f"draft-tree plugins {', '.join(required)} registered (AOT: the PTX is in the engines)"], \
        trt_plugin.network_flags("aot")


def strongly_typed(trt) -> int:
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def alias_problems(engine: "trt.ICudaEngine", pairs: list[tuple[str, str]]) -> list[str]:
    """In-place cache outputs that the engine does not alias to their inputs (empty: all are).

    TensorRT's KV-cache update layer writes into its cache input; the engine reports that with
    `get_aliased_input_tensor(output) == input` (TensorRT >= 10.15).
    """
    wrong = []
    for cache_in, cache_out in pairs:
        got = engine.get_aliased_input_tensor(cache_out)
        if got != cache_in:
            wrong.append(f"{cache_out} aliases {got!r}, not {cache_in!r}")
    return wrong


# ------------------------------------------------------------------------------------- the network

# TensorRT DataType member -> the torch dtype name the executors allocate (manifest summaries)
DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64",
               "INT8": "int8", "UINT8": "uint8", "BOOL": "bool", "FP8": "float8_e4m3fn"}


def mark_attention_decomposable(trt, network: "trt.INetworkDefinition") -> int:
    """Mark every IAttention of a parsed network decomposable (module doc); returns how many there are."""
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.ATTENTION_OUTPUT:  # one per IAttention
            layer.__class__ = trt.IAttentionBoundaryLayer  # the bindings' downcast
            boundary: "trt.IAttentionBoundaryLayer" = layer
            boundary.attention.decomposable = True
            count += 1
    return count


def kv_update_pairs(trt, network: "trt.INetworkDefinition") -> dict[str, str]:
    """{cache output: cache input} of the KV-cache update layers of a parsed network (input 0 is the cache)."""
    pairs = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.KV_CACHE_UPDATE:
            pairs[layer.get_output(0).name] = layer.get_input(0).name
    return pairs


def network_summary(network: "trt.INetworkDefinition", profiles: list["trt.IOptimizationProfile"],
                    aliases: dict[str, str], attention: int) -> dict:
    """What a built engine takes and gives, read from its network and config: {"inputs"/"outputs": {name:
    {"dtype", "shape"}}, "profiles": [{input: [min, opt, max]}], "aliases": {cache output: input},
    "attention_layers": n}."""
    def io(tensors):
        return {t.name: {"dtype": DTYPE_NAMES.get(t.dtype.name, t.dtype.name), "shape": list(t.shape)} for t in tensors}

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    return {
        "inputs": io(inputs),
        "outputs": io(network.get_output(i) for i in range(network.num_outputs)),
        "profiles": [{t.name: [list(s) for s in p.get_shape(t.name)] for t in inputs} for p in profiles],
        "aliases": aliases,
        "attention_layers": attention,
    }


# ------------------------------------------------------------------------------------- building


def _onnx_uses_fp8(path: Path) -> bool:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}
    fp8 |= {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FNUZ", "FLOAT8E5M2FNUZ") if hasattr(onnx.TensorProto, n)}
    if any(init.data_type in fp8 for init in model.graph.initializer):
        return True
    for node in model.graph.node:
        for a in node.attribute:
            if a.name in ("to", "output_dtype") and a.i in fp8:
                return True
    return False


def check_fp8(recipe, onnx_paths: list[Path], capabilities: list[tuple[str, str]]) -> None:
    """FP8 needs compute capability >= 8.9 (Ada, Hopper, Blackwell) on every target GPU, and FP8 Q/DQ in the graphs.

    capabilities: (name, "major.minor") of the GPUs the engines are built for.
    """
    low = [f"{name} has compute capability {cap}" for name, cap in capabilities
           if tuple(map(int, cap.split("."))) < FP8_MIN_CAPABILITY]
    if low:
        raise EngineBuildError(
            f"the recipe asks for fp8, but {', '.join(low)}; FP8 needs >= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
            "(Ada, Hopper, Blackwell). Set fp8 = false"
        )
    missing = [p.name for p in onnx_paths if not _onnx_uses_fp8(p)]
    if missing:
        raise EngineBuildError(
            f"the recipe asks for fp8, but {', '.join(missing)} carry no FP8 quantize/dequantize nodes; a strongly "
            "typed engine takes its precision from the graph (TensorRT 11 has no fp8 builder flag). Quantize the "
            "graphs to FP8 Q/DQ first, or set fp8 = false"
        )


def _workspace_bytes() -> int:
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(min(WORKSPACE_CAP, max(1 << 30, free * WORKSPACE_FRACTION)))


def _write_atomic(path: Path, data) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _input_ranges(name: str, dims: list[int], prof: dict, max_batch: int, copy_flavour: bool):
    """(min, opt, max) shapes of one network input in one profile."""
    lo, opt, hi = [], [], []
    for axis, d in enumerate(dims):
        if d >= 0:
            lo.append(d), opt.append(d), hi.append(d)
        elif axis == (1 if copy_flavour and name in ("k_cache", "v_cache") else 0):  # batch
            lo.append(1), opt.append(1), hi.append(max_batch)
        elif name == "logit_index":  # rows whose logits are wanted: 1 at prefill, up to T otherwise
            lo.append(1), opt.append(1 if prof["name"] == "prefill" else prof["opt"]), hi.append(prof["max"])
        else:  # tokens
            lo.append(prof["min"]), opt.append(prof["opt"]), hi.append(prof["max"])
    return lo, opt, hi


def unsupported_capabilities(trt, caps) -> str | None:
    """Why TensorRT-RTX cannot build for these compute capabilities ("8.6", ...), in one line, or None."""
    supported = [m for m in trt.ComputeCapability.__members__ if m.startswith("SM")]
    unknown = [c for c in caps if capability_name(c) not in supported]
    if not unknown:
        return None
    return (f"TensorRT-RTX {trt.__version__} cannot build for compute capability {', '.join(unknown)} (it targets "
            f"{', '.join(m[2:-1] + '.' + m[-1] for m in supported)}); H100/H200 (9.0) need `--backend tensorrt`")


def _set_compute_capabilities(trt, config: "trt.IBuilderConfig", caps: list[str]) -> None:
    """TensorRT-RTX: build for these GPUs ("8.6", ...) instead of the library's default set."""
    problem = unsupported_capabilities(trt, caps)
    if problem:
        raise EngineBuildError(problem)
    config.num_compute_capabilities = len(caps)
    for i, cap in enumerate(caps):
        if not config.set_compute_capability(getattr(trt.ComputeCapability, capability_name(cap)), i):
            raise EngineBuildError(f"TensorRT-RTX refused compute capability {cap}")


def build_engine(
    trt,
    logger,
    onnx_path: Path,
    engine_path: Path,
    token_profiles: list[dict],
    max_batch: int,
    timing_cache: Path | None,
    say: Callable[[str], None] = log.info,
    exact_fp32: bool = True,
    flags: int | None = None,
    library: TrtLibrary = TENSORRT,
    compute_capabilities: list[str] | None = None,
) -> dict:
    """Parse `onnx_path` into a strongly typed network, serialize an engine to `engine_path` and return
    its `network_summary` plus "build_s" and "bytes".

    exact_fp32: keep float32 graphs in float32 (no TF32 matmuls), so a float32 build reproduces
    the reference's greedy tokens. In-place-flavour graphs are checked for aliased cache outputs.
    compute_capabilities: TensorRT-RTX's target GPUs (None: the library's default set).
    """
    from .kv_layout import COPY, INPLACE, cache_pairs, flavour_of

    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed(trt) if flags is None else flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data weights relative to the graph's folder.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{library.label} could not parse {onnx_path.name}: " + " | ".join(errors))

    config = builder.create_builder_config()
    if not library.builds_without_gpu:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _workspace_bytes())
    if exact_fp32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if compute_capabilities:
        _set_compute_capabilities(trt, config, compute_capabilities)

    names = []
    for i in range(network.num_inputs):
        names.append(network.get_input(i).name)
    flavour = flavour_of(names) if any(n.startswith("k_cache") for n in names) else None
    aliases, attention = {}, 0
    if flavour == INPLACE:  # IAttention and the KV-cache update layer exist from TensorRT 10.15 (opset 23/24 graphs)
        attention = mark_attention_decomposable(trt, network)
        aliases = kv_update_pairs(trt, network)
        wrong = [f"{o} <- {i}" for i, o in cache_pairs(names) if aliases.get(o) != i]
        if wrong or len(aliases) != len(cache_pairs(names)):
            raise EngineBuildError(
                f"{engine_path.name}: {library.label} did not parse every KV-cache write into an in-place KV-cache "
                f"update layer (missing or misplaced: {', '.join(wrong) or 'extra layers'}); rebuild with `--kv-flavour copy`"
            )
    profiles = []
    for prof in token_profiles:
        p = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            p.set_shape(tensor.name, *_input_ranges(tensor.name, list(tensor.shape), prof, max_batch, flavour == COPY))
        config.add_optimization_profile(p)
        profiles.append(p)

    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            say(f"timing cache {timing_cache} does not fit this TensorRT/GPU; starting a fresh one")
            cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
                raise EngineBuildError("TensorRT could not create a timing cache (see the TensorRT log above)")

    say(f"building {engine_path.name} from {onnx_path.name} with {library.label} ({len(token_profiles)} profiles, "
        f"batch 1..{max_batch})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{library.label} failed to build {engine_path.name} (see its log above)")
    if flavour == INPLACE and not library.builds_without_gpu:  # a datacenter build has a GPU to load it on
        engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
        if engine is None:
            raise EngineBuildError(f"TensorRT could not load the {engine_path.name} it just built")
        wrong = alias_problems(engine, cache_pairs(names))
        if wrong:
            raise EngineBuildError(
                f"{engine_path.name}: TensorRT did not lower the KV-cache writes to in-place updates ({'; '.join(wrong)}); "
                "rebuild with `--kv-flavour copy`"
            )
    _write_atomic(engine_path, serialized)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(timing_cache, config.get_timing_cache().serialize())
    summary = network_summary(network, profiles, aliases, attention)
    return {**summary, "build_s": round(time.perf_counter() - t0, 2), "bytes": engine_path.stat().st_size}


def build_engines(
    recipe,
    out_dir: Path,
    target_onnx: Path,
    drafter_onnx: Path,
    timing_cache: Path | None = None,
    log: Callable[[str], None] = log.info,
    tree_graphs: dict[str, Path] | None = None,
    library: TrtLibrary = TENSORRT,
) -> dict:
    """Build the target and drafter engines (and, where the library has plugins, the draft-tree plugin
    engines from `tree_graphs`, {"expand": path, "finalize": path}) into `out_dir`; returns the
    manifest's engine fields and notes."""
    from .kv_layout import INPLACE, INPLACE_MIN_TENSORRT, flavour_of, version_tuple

    ok, reason = available(library)
    if not ok:
        raise EngineBuildError(f"{library.label} engines cannot be built here: {reason}")
    trt = library.load()
    import onnx

    flavour = flavour_of(i.name for i in onnx.load(str(target_onnx), load_external_data=False).graph.input)
    if (library is TENSORRT and flavour == INPLACE
            and version_tuple(trt.__version__)[:2] < INPLACE_MIN_TENSORRT):
        raise EngineBuildError(
            f"the graphs have in-place KV caches (TensorScatter), which need TensorRT >= "
            f"{'.'.join(map(str, INPLACE_MIN_TENSORRT))}; this host has TensorRT {trt.__version__}: rebuild with "
            "`--kv-flavour copy` (or `auto`)"
        )
    caps = list(recipe.compute_capabilities or []) if library.compute_capabilities else []
    if library.compute_capabilities:
        gpu, gpu_cap = None, None
        targets = [(f"target {c}", c) for c in caps] or [("the default target set (from 8.0)", "8.0")]
    else:
        import torch

        gpu, (major, minor) = torch.cuda.get_device_name(), torch.cuda.get_device_capability()
        gpu_cap = f"{major}.{minor}"
        targets = [(gpu, gpu_cap)]
    if recipe.fp8:
        check_fp8(recipe, [target_onnx, drafter_onnx], targets)
    out_dir = Path(out_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    tree_graphs = (tree_graphs or {}) if library.plugins else {}
    required = sorted({op for g in tree_graphs.values() for op in graph_plugin_ops(g)})
    notes, plugin_flags = load_plugins(trt, logger, required)
    if not library.plugins:
        notes.append(f"{library.label} has no plugins: the tree steps run between the engines as the OpenAI-Triton "
                     "kernels")
    timing_cache = timing_cache if not library.builds_without_gpu else None  # a no-op in TensorRT-RTX

    profiles = profiles_for(recipe)
    mb = recipe.limits.max_batch
    exact = recipe.dtype == "float32"
    common = dict(say=log, exact_fp32=exact, library=library, compute_capabilities=caps)
    summaries = {
        "target": build_engine(trt, logger, target_onnx, out_dir / TARGET_ENGINE, profiles["target"], mb, timing_cache,
                               **common),
        "drafter": build_engine(trt, logger, drafter_onnx, out_dir / DRAFTER_ENGINE, profiles["drafter"], mb,
                                timing_cache, **common),
    }
    tree_engines = {}
    for name, graph in tree_graphs.items():
        # Only the batch axis is dynamic in the tree graphs; one profile covers 1..max_batch.
        path = out_dir / f"draft_tree_{name}.plan"
        build_engine(trt, logger, graph, path, [{"name": name, "min": 1, "opt": 1, "max": 1}], mb, timing_cache,
                     flags=plugin_flags, **common)
        tree_engines[f"tree_{name}_engine"] = path.name
    notes.append(
        "engine profiles: target " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["target"])
        + "; drafter " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["drafter"])
    )
    if exact and any(s["attention_layers"] for s in summaries.values()):
        notes.append("float32 attention has no fused TensorRT kernel: it runs decomposed (BMM + softmax + BMM)")
    return {
        "target_engine": TARGET_ENGINE,
        "drafter_engine": DRAFTER_ENGINE,
        "tensorrt_version": trt.__version__,
        "tensorrt_library": library.backend,
        "compute_capabilities": caps or None,
        "engines": summaries,
        "gpu": gpu,
        "gpu_capability": gpu_cap,
        "notes": notes,
        **tree_engines,
    }
