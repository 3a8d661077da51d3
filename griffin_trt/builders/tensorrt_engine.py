"""Strongly typed TensorRT engines from the exported ONNX graphs (GPU hosts with TensorRT 10.x/11).

Imported lazily: `available()` is the only function safe to call anywhere; it imports TensorRT
inside a try. Precision comes from the ONNX graph (strongly typed network: TensorRT 11 removed the
fp16/bf16/int8/fp8 builder flags), so the engine computes in the recipe's dtype.

Optimization profiles (batch 1..max_batch in all of them):

- target:  0 prefill (T 1..max_input_len), 1 verify (T 1..tree_size; plain decoding is T = 1)
- drafter: 0 prefill (T 1..max_input_len), 1 update (T 1..max_accept, the accepted path),
           2 frontier (T 1..max(top_k, nodes of one static-tree level))

`PROFILES` describes them once; the TensorRT executor selects a profile by the same table (it reads
the ranges back from the engine). The timing cache is loaded before and saved after every build so
rebuilds are fast. Engines are written atomically (temp file + rename).
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

TARGET_ENGINE = "target.plan"
DRAFTER_ENGINE = "drafter.plan"
PLUGIN_MODULE = "griffin_trt.tree.trt_plugin"
WORKSPACE_FRACTION = 0.5  # of free GPU memory, capped below
WORKSPACE_CAP = 16 << 30
FP8_MIN_CAPABILITY = (8, 9)


class EngineBuildError(RuntimeError):
    """TensorRT could not build an engine; the message carries the parser/builder errors."""


def available() -> tuple[bool, str]:
    """(True, version) when TensorRT imports and torch sees a CUDA GPU, else (False, reason)."""
    try:
        import tensorrt as trt
    except Exception as e:  # noqa: BLE001 - missing, or a broken install
        return False, f"`import tensorrt` failed: {type(e).__name__}: {e}"
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        return False, f"`import torch` failed: {e}"
    if not torch.cuda.is_available():
        return False, f"TensorRT {trt.__version__} is installed but torch sees no CUDA GPU"
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


def load_plugins(trt, logger, say: Callable[[str], None] = log.info, required: list[str] | None = None):
    """Register TensorRT's own plugins and the draft-tree plugins, if this install has them.

    The plugin module (`griffin_trt.tree.trt_plugin`) may offer `load_plugin()` (registers its Python
    `tensorrt.plugin` definitions; raises when TensorRT's plugin API is missing), `register()` (same
    role), `plugin_library() -> path | None` (a compiled IPluginV3 library, loaded into the registry
    here) and `network_flags(prefer, strongly_typed)` (creation flags such as
    PREFER_AOT_PYTHON_PLUGINS). Failing to load is fatal only when a graph uses a plugin
    (`required`). Returns (library path to ship next to the engines, notes, network creation flags).
    """
    notes: list[str] = []
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    trt.init_libnvinfer_plugins(logger, "")
    try:
        mod = importlib.import_module(PLUGIN_MODULE)
    except ImportError as e:
        if required:
            raise EngineBuildError(f"the graphs use plugins {required} but {PLUGIN_MODULE} does not import: {e}") from e
        return None, notes, flags
    library = None
    try:
        get_lib = getattr(mod, "plugin_library", None)
        lib = get_lib() if callable(get_lib) else None
        if lib:
            library = Path(lib)
            if not library.is_file():
                raise EngineBuildError(f"{PLUGIN_MODULE}.plugin_library() names {library}, which does not exist")
            trt.get_plugin_registry().load_library(str(library))
            notes.append(f"plugin library {library.name} loaded")
        for fn_name in ("load_plugin", "register"):
            fn = getattr(mod, fn_name, None)
            if callable(fn):
                fn()
                notes.append(f"draft-tree plugins registered ({PLUGIN_MODULE}.{fn_name})")
                break
        nf = getattr(mod, "network_flags", None)
        if callable(nf):
            flags = int(nf("aot", strongly_typed=True))
    except Exception as e:  # noqa: BLE001 - a plugin the graphs do not use must not stop the build
        if required:
            raise EngineBuildError(f"the graphs use plugins {required} but they could not be loaded: {e}") from e
        notes.append(f"draft-tree plugins not loaded ({type(e).__name__}: {e}); the graphs do not use them")
    if notes:
        say("; ".join(notes))
    return library, notes, flags


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


def check_fp8(recipe, onnx_paths: list[Path]) -> None:
    """FP8 needs an Ada/Hopper/Blackwell GPU (compute capability >= 8.9) and FP8 Q/DQ in the graphs."""
    import torch

    cap = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if cap < FP8_MIN_CAPABILITY:
        raise EngineBuildError(
            f"the recipe asks for fp8, but {name} has compute capability {cap[0]}.{cap[1]}; FP8 needs "
            f">= {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} (Ada, Hopper, Blackwell). Set fp8 = false"
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
) -> None:
    """Parse `onnx_path` into a strongly typed network and serialize an engine to `engine_path`.

    exact_fp32: keep float32 graphs in float32 (no TF32 matmuls), so a float32 build reproduces
    the reference's greedy tokens.
    """
    builder = trt.Builder(logger)
    if flags is None:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data weights relative to the graph's folder.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: " + " | ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _workspace_bytes())
    if exact_fp32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for prof in token_profiles:
        p = builder.create_optimization_profile()
        for tensor in inputs:
            dims = list(tensor.shape)
            lo, opt, hi = [], [], []
            for axis, d in enumerate(dims):
                if d >= 0:
                    lo.append(d), opt.append(d), hi.append(d)
                    continue
                # Dynamic axes: batch first (axis 1 of the target's [L, B, ...] caches), then tokens.
                is_batch = axis == 0 or (tensor.name in ("k_cache", "v_cache") and len(dims) == 5 and axis == 1)
                if is_batch:
                    lo.append(1), opt.append(1), hi.append(max_batch)
                else:
                    lo.append(prof["min"]), opt.append(prof["opt"]), hi.append(prof["max"])
            p.set_shape(tensor.name, lo, opt, hi)
        config.add_optimization_profile(p)

    cache_blob = b""
    if timing_cache is not None and timing_cache.is_file():
        cache_blob = timing_cache.read_bytes()
    cache = config.create_timing_cache(cache_blob)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        say(f"timing cache {timing_cache} does not fit this TensorRT/GPU; starting a fresh one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=True)

    say(f"building {engine_path.name} from {onnx_path.name} ({len(token_profiles)} profiles, batch 1..{max_batch})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {engine_path.name} (see the TensorRT log above)")
    _write_atomic(engine_path, serialized)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(timing_cache, config.get_timing_cache().serialize())


def build_engines(
    recipe,
    out_dir: Path,
    target_onnx: Path,
    drafter_onnx: Path,
    timing_cache: Path | None = None,
    log: Callable[[str], None] = log.info,
    tree_graphs: dict[str, Path] | None = None,
) -> dict:
    """Build the target and drafter engines (and the draft-tree plugin engines from `tree_graphs`,
    {"expand": path, "finalize": path}) into `out_dir`; returns the manifest's engine fields and notes."""
    import tensorrt as trt
    import torch

    ok, reason = available()
    if not ok:
        raise EngineBuildError(f"TensorRT engines cannot be built here: {reason}")
    if recipe.fp8:
        check_fp8(recipe, [target_onnx, drafter_onnx])
    out_dir = Path(out_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    tree_graphs = tree_graphs or {}
    graphs = [target_onnx, drafter_onnx, *tree_graphs.values()]
    required = sorted({op for g in graphs for op in graph_plugin_ops(g)})
    library, notes, flags = load_plugins(trt, logger, log, required)
    plugin_rel = None
    if library is not None:
        (out_dir / "plugins").mkdir(exist_ok=True)
        shutil.copy2(library, out_dir / "plugins" / library.name)
        plugin_rel = f"plugins/{library.name}"

    profiles = profiles_for(recipe)
    mb = recipe.limits.max_batch
    exact = recipe.dtype == "float32"
    build_engine(trt, logger, target_onnx, out_dir / TARGET_ENGINE, profiles["target"], mb, timing_cache, log, exact, flags)
    build_engine(trt, logger, drafter_onnx, out_dir / DRAFTER_ENGINE, profiles["drafter"], mb, timing_cache, log, exact, flags)
    tree_engines = {}
    for name, graph in tree_graphs.items():
        # Only the batch axis is dynamic in the tree graphs; one profile covers 1..max_batch.
        path = out_dir / f"draft_tree_{name}.plan"
        build_engine(trt, logger, graph, path, [{"name": name, "min": 1, "opt": 1, "max": 1}], mb, timing_cache,
                     log, exact, flags)
        tree_engines[f"tree_{name}_engine"] = path.name
    cap = torch.cuda.get_device_capability()
    notes.append(
        "engine profiles: target " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["target"])
        + "; drafter " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["drafter"])
    )
    return {
        "target_engine": TARGET_ENGINE,
        "drafter_engine": DRAFTER_ENGINE,
        "plugin": plugin_rel,
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "gpu_capability": f"{cap[0]}.{cap[1]}",
        "notes": notes,
        **tree_engines,
    }
