"""KV-cache bytes per target call and KV memory held, copy flavour vs in-place flavour, at the
LLaMA-3-8B shape (bf16, 8192-slot cache, batch 1 and 8), read from real exported graphs.

    python benchmarks/kv_bytes.py [--layers-exported 2] [--out DIR]

How the figures are derived (a CPU computation from graph I/O, not a GPU timing):
- Both flavours' target graphs are exported with our exporter from a LlamaForCausalLM that has
  LLaMA-3-8B's attention geometry (32 query heads, 8 KV heads, head_dim 128, bf16) and an 8192-slot
  cache, but only `--layers-exported` layers and a tiny hidden size / vocabulary: the cache tensors
  and the cache-update nodes per layer are exactly the 8B model's. Per-layer bytes are scaled to its
  32 layers (KV bytes are linear in the layer count).
- copy flavour: each call reads the whole cache input (`k_cache`/`v_cache` [L, B, 8, S, 128]) and
  writes the whole output (ScatterElements copies it), and the executor holds input and output
  buffers (double buffer).
- in-place flavour: each layer's `TensorScatter` reads its `update` [B, 8, T, 128] and writes those
  T slots into the cache buffer its output is bound to (aliased: one buffer per layer held).
- Attention reads the whole S-slot cache (masked) in both flavours; shown once for scale.
- Logits: the prefill of P tokens returns [B, P, V] float32 logits in the copy flavour and only the
  last token's [B, 1, V] in the in-place flavour (V = 128256 for LLaMA-3).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

LLAMA3_8B = {"layers": 32, "heads": 32, "kv_heads": 8, "head_dim": 128, "vocab": 128256}
S, DTYPE = 8192, "bfloat16"
TREE_T, PREFILL_P = 60, 1024  # the default tree's verify width; a prefill length for the logits line
GiB, MiB = float(1 << 30), float(1 << 20)


def export_graphs(out: Path, layers: int) -> dict[str, Path]:
    import torch
    import transformers as tf

    from griffin_trt.builders.export_onnx import export_target
    from griffin_trt.models.target import TargetModel

    g = LLAMA3_8B
    cfg = tf.LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=layers,
                         num_attention_heads=g["heads"], num_key_value_heads=g["kv_heads"], head_dim=g["head_dim"],
                         max_position_embeddings=S)
    torch.manual_seed(0)
    hf = tf.LlamaForCausalLM(cfg).to(getattr(torch, DTYPE)).eval().requires_grad_(False)
    target = TargetModel(hf)
    return {fl: export_target(target, S, out / f"target-{fl}.onnx", max_tokens=PREFILL_P, flavour=fl).path
            for fl in ("copy", "inplace")}


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def _bytes(dims: list, env: dict, elem: int) -> int:
    n = 1
    for d in dims:
        n *= env[d] if isinstance(d, str) else d
    return n * elem


def graph_figures(path: Path) -> dict:
    """Per exported graph: the cache tensors and cache-update nodes with their (symbolic) shapes."""
    import onnx
    from onnx import helper, shape_inference

    from griffin_trt.builders.export_onnx import check_cache_updates
    from griffin_trt.builders.kv_layout import INPLACE, cache_pairs, flavour_of

    model = onnx.load(str(path))
    g = model.graph
    flavour = flavour_of(i.name for i in g.input)
    io = {v.name: v for v in [*g.input, *g.output]}
    elem = helper.tensor_dtype_to_np_dtype(io["k_cache_0" if flavour == INPLACE else "k_cache"]
                                           .type.tensor_type.elem_type).itemsize
    pairs = cache_pairs(i.name for i in g.input)
    info = {"flavour": flavour, "elem": elem, "pairs": [(_dims(io[a]), _dims(io[b])) for a, b in pairs],
            "logits": _dims(io["logits"])}
    if flavour == INPLACE:
        check_cache_updates(model, path.name)  # each cache: one TensorScatter whose output is the graph output
        inferred = shape_inference.infer_shapes(model)
        shapes = {v.name: _dims(v) for v in [*inferred.graph.value_info, *inferred.graph.input]}
        info["updates"] = [shapes[n.input[1]] for n in g.node if n.op_type == "TensorScatter"]
    return info


def call_bytes(info: dict, b: int, t: int, layers_exported: int) -> dict[str, float]:
    """KV bytes read and written by the cache update of one target call over T tokens, attention's
    read of the cache, and KV memory held, scaled to LLaMA-3-8B's layer count."""
    env = {"batch": b, "tokens": t, "rows": t}
    scale = LLAMA3_8B["layers"] / layers_exported
    elem = info["elem"]
    cache = sum(_bytes(i, env, elem) for i, _ in info["pairs"])  # every cache input once
    if info["flavour"] == "copy":
        read = cache
        written = sum(_bytes(o, env, elem) for _, o in info["pairs"])
        held = cache + written  # inputs and outputs are separate buffers
    else:
        read = written = sum(_bytes(u, env, elem) for u in info["updates"])
        held = cache  # outputs are aliased to the inputs
    return {k: v * scale for k, v in {"read": read, "written": written, "attention": cache, "held": held}.items()}


def logits_bytes(info: dict, b: int) -> float:
    dims = info["logits"]  # [batch, tokens | rows, V]
    env = {"batch": b, "tokens": PREFILL_P, "rows": 1}
    return _bytes([*dims[:2], LLAMA3_8B["vocab"]], env, 4)


def report(figures: dict[str, dict], layers_exported: int) -> str:
    def fmt(x: float) -> str:
        return f"{x / GiB:.2f} GiB" if x >= GiB / 4 else f"{x / MiB:.2f} MiB"

    rows = ["| flavour | B | call | KV read by the update | KV written | attention reads (both) | KV memory held |",
            "|---|---|---|---|---|---|---|"]
    for b in (1, 8):
        for call, t in (("tree verify, T=60", TREE_T), ("plain decode, T=1", 1)):
            for fl in ("copy", "inplace"):
                c = call_bytes(figures[fl], b, t, layers_exported)
                rows.append(f"| {fl} | {b} | {call} | {fmt(c['read'])} | {fmt(c['written'])} | {fmt(c['attention'])} | "
                            f"{fmt(c['held'])} |")
    rows.append("")
    rows.append(f"Prefill logits output for P={PREFILL_P} tokens, V={LLAMA3_8B['vocab']}, float32: " + ", ".join(
        f"B={b}: copy {fmt(logits_bytes(figures['copy'], b))}, in-place {fmt(logits_bytes(figures['inplace'], b))}"
        for b in (1, 8)))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers-exported", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the exported graphs here (default: a temp folder)")
    ap.add_argument("--json", action="store_true", help="print the per-call figures as JSON too")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        paths = export_graphs(out, args.layers_exported)
        figures = {fl: graph_figures(p) for fl, p in paths.items()}
    print(f"LLaMA-3-8B KV geometry ({LLAMA3_8B['kv_heads']} KV heads x {LLAMA3_8B['head_dim']}, {DTYPE}, S={S}), "
          f"{args.layers_exported} layers exported, scaled to {LLAMA3_8B['layers']}:\n")
    print(report(figures, args.layers_exported))
    if args.json:
        print(json.dumps({fl: {f"B{b}_T{t}": call_bytes(figures[fl], b, t, args.layers_exported)
                               for b in (1, 8) for t in (1, TREE_T)} for fl in figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
