"""Strongly typed TensorRT engines from the exported ONNX graphs (GPU hosts with TensorRT 10.x/11).

Imported lazily: `available()` is the only function safe to call anywhere; it imports TensorRT
inside a try. Precision comes from the ONNX graph (strongly typed network: TensorRT 11 removed the
fp16/bf16/int8/fp8 builder flags), so the engine computes in the recipe's dtype.

Optimization profiles (batch 1..max_batch in all of them):

- target:  0 prefill (T 1..max_input_len), 1 verify (T 1..tree_size; plain decoding is T = 1)
- drafter: 0 prefill (T 1..max_input_len), 1 update (T 1..max_accept, the accepted path),
           2 frontier (T 1..max(top_k, nodes of one static-tree level))

`profiles_for` describes them once; the TensorRT executor reads the ranges back from the engine.
The timing cache is loaded before and saved after every build so rebuilds are fast. Engines are
written atomically (temp file + rename).

In-place graphs (builders/kv_layout.py, TensorRT >= 10.15): TensorRT lowers each cache's
TensorScatter to its KV-cache update layer, whose output shares the cache input's memory. Every
built engine is deserialized once to check that `get_aliased_input_tensor` reports each pair; a
build where TensorRT did not alias them stops with a message (rebuild with `--kv-flavour copy`).
The draft-tree plugin graphs are parsed with PREFER_AOT_PYTHON_PLUGINS (the PTX goes into the
engine); a plugin that cannot register stops the build naming the TensorRT version found.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

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
    the reference's greedy tokens. In-place-flavour graphs are checked for aliased cache outputs.
    """
    from .kv_layout import COPY, INPLACE, cache_pairs, flavour_of

    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed(trt) if flags is None else flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external-data weights relative to the graph's folder.
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT could not parse {onnx_path.name}: " + " | ".join(errors))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _workspace_bytes())
    if exact_fp32:
        config.clear_flag(trt.BuilderFlag.TF32)

    names = []
    for i in range(network.num_inputs):
        names.append(network.get_input(i).name)
    flavour = flavour_of(names) if any(n.startswith("k_cache") for n in names) else None
    for prof in token_profiles:
        p = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            p.set_shape(tensor.name, *_input_ranges(tensor.name, list(tensor.shape), prof, max_batch, flavour == COPY))
        config.add_optimization_profile(p)

    blob = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(blob)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        say(f"timing cache {timing_cache} does not fit this TensorRT/GPU; starting a fresh one")
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=True):
            raise EngineBuildError("TensorRT could not create a timing cache (see the TensorRT log above)")

    say(f"building {engine_path.name} from {onnx_path.name} ({len(token_profiles)} profiles, batch 1..{max_batch})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {engine_path.name} (see the TensorRT log above)")
    if flavour == INPLACE:
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

    from .kv_layout import INPLACE, INPLACE_MIN_TENSORRT, flavour_of, version_tuple

    ok, reason = available()
    if not ok:
        raise EngineBuildError(f"TensorRT engines cannot be built here: {reason}")
    import onnx

    flavour = flavour_of(i.name for i in onnx.load(str(target_onnx), load_external_data=False).graph.input)
    if flavour == INPLACE and version_tuple(trt.__version__)[:2] < INPLACE_MIN_TENSORRT:
        raise EngineBuildError(
            f"the graphs have in-place KV caches (TensorScatter), which need TensorRT >= "
            f"{'.'.join(map(str, INPLACE_MIN_TENSORRT))}; this host has TensorRT {trt.__version__}: rebuild with "
            "`--kv-flavour copy` (or `auto`)"
        )
    if recipe.fp8:
        check_fp8(recipe, [target_onnx, drafter_onnx])
    out_dir = Path(out_dir)
    logger = trt.Logger(trt.Logger.WARNING)
    tree_graphs = tree_graphs or {}
    required = sorted({op for g in tree_graphs.values() for op in graph_plugin_ops(g)})
    notes, plugin_flags = load_plugins(trt, logger, required)

    profiles = profiles_for(recipe)
    mb = recipe.limits.max_batch
    exact = recipe.dtype == "float32"
    build_engine(trt, logger, target_onnx, out_dir / TARGET_ENGINE, profiles["target"], mb, timing_cache, log, exact)
    build_engine(trt, logger, drafter_onnx, out_dir / DRAFTER_ENGINE, profiles["drafter"], mb, timing_cache, log, exact)
    tree_engines = {}
    for name, graph in tree_graphs.items():
        # Only the batch axis is dynamic in the tree graphs; one profile covers 1..max_batch.
        path = out_dir / f"draft_tree_{name}.plan"
        build_engine(trt, logger, graph, path, [{"name": name, "min": 1, "opt": 1, "max": 1}], mb, timing_cache,
                     log, exact, plugin_flags)
        tree_engines[f"tree_{name}_engine"] = path.name
    cap = torch.cuda.get_device_capability()
    notes.append(
        "engine profiles: target " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["target"])
        + "; drafter " + ", ".join(f"{p['name']} T<={p['max']}" for p in profiles["drafter"])
    )
    return {
        "target_engine": TARGET_ENGINE,
        "drafter_engine": DRAFTER_ENGINE,
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "gpu_capability": f"{cap[0]}.{cap[1]}",
        "notes": notes,
        **tree_engines,
    }
