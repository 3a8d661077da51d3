"""The two KV-cache layouts ("flavours") an exported graph can have, and their tensor names.

- `inplace` (default for onnxruntime and for TensorRT >= 10.15): per-layer caches
  `k_cache_<i>` / `v_cache_<i>` of shape [B, KVH, S, D], each written by one ONNX `TensorScatter`
  (opset 24, axis -2, linear mode) whose output `k_cache_<i>_out` is a graph output. Executors bind
  input and output to ONE buffer: TensorRT lowers the node to its KV-cache update layer, which writes
  in place (the engine reports the pair with `get_aliased_input_tensor`), and onnxruntime updates in
  place when both share a buffer. The write of a call is one contiguous run of slots per row, starting
  at `write_index[:, 0]`.
- `copy` (TensorRT 10.9 .. 10.14): the older graphs, `k_cache` / `v_cache` [L, B, KVH, S, D] for the
  target ([B, KVH, S, D] for the drafter) written by ScatterElements and returned whole as
  `k_cache_out` / `v_cache_out`; executors double-buffer them.

Standard library only: the builders, executors and benchmarks all read these names from here.
"""
from __future__ import annotations

INPLACE = "inplace"
COPY = "copy"
FLAVOURS = (INPLACE, COPY)

# The TensorScatter -> KV-cache-update lowering and ICudaEngine.get_aliased_input_tensor exist from
# TensorRT 10.15 (the plugins' own floor, 10.9, is griffin_trt.tree.trt_plugin.MIN_TENSORRT).
INPLACE_MIN_TENSORRT = (10, 15)
# The TensorRT API only in-place builds use (absent before INPLACE_MIN_TENSORRT): the alias query, and the
# layers the parser makes of opset 23/24 graphs (IAttention, the KV-cache update).
INPLACE_ONLY_API = ("ICudaEngine.get_aliased_input_tensor", "tensorrt.LayerType.ATTENTION_OUTPUT",
                    "tensorrt.LayerType.KV_CACHE_UPDATE", "tensorrt.IAttentionBoundaryLayer")

COPY_PAIRS = (("k_cache", "k_cache_out"), ("v_cache", "v_cache_out"))


def layer_pairs(num_layers: int) -> list[tuple[str, str]]:
    """(input, output) names of the in-place flavour's caches: k then v of layer 0, 1, ..."""
    return [(f"{kv}_cache_{i}", f"{kv}_cache_{i}_out") for i in range(num_layers) for kv in ("k", "v")]


def flavour_of(input_names) -> str:
    """The flavour of a graph or engine, from its input names."""
    names = set(input_names)
    if "k_cache_0" in names:
        return INPLACE
    if "k_cache" in names:
        return COPY
    raise ValueError(f"no KV-cache inputs among {sorted(names)}")


def cache_pairs(input_names) -> list[tuple[str, str]]:
    """(input, output) cache names of a graph, in the layer order above."""
    names = set(input_names)
    if flavour_of(names) == COPY:
        return list(COPY_PAIRS)
    n = 0
    while f"k_cache_{n}" in names:
        n += 1
    return layer_pairs(n)


def version_tuple(version: str) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1, 11); a non-numeric tail ends the tuple ('10.14.1.48.post1' -> (10, 14, 1, 48))."""
    out = []
    for part in str(version).split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def flavour_for_tensorrt(version: str | None) -> str:
    """The flavour a build uses: in place without TensorRT (onnxruntime) or with TensorRT >= 10.15."""
    if version is None or version_tuple(version)[:2] >= INPLACE_MIN_TENSORRT:
        return INPLACE
    return COPY
