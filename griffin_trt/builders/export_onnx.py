"""Export the target step and the drafter step to ONNX: the graphs TensorRT parses and onnxruntime runs.

Two graphs, both with static KV-cache capacity and dynamic batch (B) and token (T) axes, in one of
two cache flavours (`kv_layout.py`):

`inplace` (opset 24; default):
- `target.onnx`: (tokens, positions, write_index int64 [B, T], mask bool [B, T, S_t],
  logit_index int64 [B, R], k_cache_0, v_cache_0, ..., k_cache_{L-1}, v_cache_{L-1} [B, KVH, S_t, D])
  -> (logits f32 [B, R, V], hidden [B, T, H], k_cache_0_out, v_cache_0_out, ...). `logit_index`
  names the rows whose logits the loop reads (prefill: each prompt's last token; verify: all T).
- `drafter.onnx`: (features [B, T, H], tokens, positions, write_index, mask [B, T, S_d],
  k_cache_0, v_cache_0 [B, KVH, S_d, D]) -> (topk_logprobs f32 [B, T, k], topk_ids int64 [B, T, k],
  regress [B, T, H], k_cache_0_out, v_cache_0_out).
Each cache is written by one `TensorScatter` (the `griffin::write_cache_run` op of
`models/attention.py`, translated here) at slots write_index[:, 0] + 0..T-1: every write the loop
makes is one contiguous run per row. Bind each cache input and its output to one buffer.

`copy` (opset 18; for TensorRT < 10.15):
- `target.onnx`: (tokens, positions, write_index, mask, k_cache, v_cache [L, B, KVH, S_t, D]) ->
  (logits f32 [B, T, V], hidden, k_cache_out, v_cache_out) and `drafter.onnx` with [B, KVH, S_d, D]
  caches: the caches come back whole (ScatterElements); executors double-buffer them.

S_t = recipe.target_kv_len, S_d = recipe.drafter_kv_len, k = recipe.tree.top_k (baked in).
The dynamo exporter (torch.export) is tried first; the TorchScript exporter is the fallback for the
copy flavour (it cannot emit opset 24).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .kv_layout import COPY, FLAVOURS, INPLACE, layer_pairs

log = logging.getLogger(__name__)

OPSET = 18  # the copy flavour
INPLACE_OPSET = 24  # TensorScatter
# Above this many bytes of weights a graph keeps its weights in a side file (protobuf's 2 GiB limit).
EXTERNAL_DATA_BYTES = 1 << 30

# The copy flavour's interface.
TARGET_INPUTS = ("tokens", "positions", "write_index", "mask", "k_cache", "v_cache")
TARGET_OUTPUTS = ("logits", "hidden", "k_cache_out", "v_cache_out")
DRAFTER_INPUTS = ("features", "tokens", "positions", "write_index", "mask", "k_cache", "v_cache")
DRAFTER_OUTPUTS = ("topk_logprobs", "topk_ids", "regress", "k_cache_out", "v_cache_out")


def target_io(flavour: str, num_layers: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the target graph in a flavour."""
    if flavour == COPY:
        return TARGET_INPUTS, TARGET_OUTPUTS
    pairs = layer_pairs(num_layers)
    return ("tokens", "positions", "write_index", "mask", "logit_index", *(i for i, _ in pairs)), (
        "logits", "hidden", *(o for _, o in pairs))


def drafter_io(flavour: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of the drafter graph in a flavour."""
    if flavour == COPY:
        return DRAFTER_INPUTS, DRAFTER_OUTPUTS
    pairs = layer_pairs(1)
    return ("features", "tokens", "positions", "write_index", "mask", *(i for i, _ in pairs)), (
        "topk_logprobs", "topk_ids", "regress", *(o for _, o in pairs))


class ExportError(RuntimeError):
    """Both exporters failed, or the exported graph does not check; carries both reasons."""


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    files: list[Path] = field(default_factory=list)  # the graph plus any external-data files
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _export_mode(module: torch.nn.Module, flavour: str):
    """Switch a model's cache writes to out-of-place (caches become graph outputs) for the export;
    in the inplace flavour as one contiguous run per row (TensorScatter)."""
    flagged = [m for m in module.modules() if hasattr(m, "inplace")]
    saved = [(m.inplace, m.contiguous) for m in flagged]
    for m in flagged:
        m.inplace, m.contiguous = False, flavour == INPLACE
    try:
        yield
    finally:
        for m, (inplace, contiguous) in zip(flagged, saved):
            m.inplace, m.contiguous = inplace, contiguous


def _tensor_scatter(cache, new, start):
    """ONNX translation of `griffin::write_cache_run`: the standard KV-cache update node."""
    from onnxscript import values

    op24 = values.Opset("", INPLACE_OPSET)
    return op24.TensorScatter(cache, new, start, axis=-2, mode="linear")


class _LayerCacheTarget(torch.nn.Module):
    """TargetModel over a flat list of per-layer caches [k_0, v_0, k_1, v_1, ...] (the inplace flavour)."""

    def __init__(self, target: torch.nn.Module):
        super().__init__()
        self.target = target

    def forward(self, tokens, positions, write_index, mask, logit_index, caches: list[torch.Tensor]):
        logits, hidden, ks, vs = self.target(
            tokens, positions, write_index, mask, list(caches[0::2]), list(caches[1::2]), logit_index
        )
        return (logits, hidden, *(t for kv in zip(ks, vs) for t in kv))


class _LayerCacheDrafter(torch.nn.Module):
    """DraftStep with its one layer's caches as a list [k_0, v_0] (the inplace flavour)."""

    def __init__(self, draft_step: torch.nn.Module):
        super().__init__()
        self.step = draft_step

    def forward(self, features, tokens, positions, write_index, mask, caches: list[torch.Tensor]):
        return self.step(features, tokens, positions, write_index, mask, caches[0], caches[1])


def _example_mask(b: int, t: int, s: int, device) -> torch.Tensor:
    """A causal block over the first t slots (values only matter for tracing, not for the graph)."""
    mask = torch.zeros(b, t, s, dtype=torch.bool, device=device)
    for i in range(t):
        mask[:, i, : i + 1] = True
    return mask


def _param_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for p in list(module.parameters()) + list(module.buffers()):
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel() * p.element_size()
    return total


def _external_files(path: Path) -> list[Path]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locs = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location":
                    locs.add(entry.value)
    return [path.parent / loc for loc in sorted(locs)]


def _dynamo_shapes(args: tuple, input_names, dynamic, token_max: int) -> tuple:
    """torch.export dynamic shapes per forward argument (a list argument gets one spec per element)."""
    dims = {
        "batch": torch.export.Dim("batch", min=1, max=4096),
        "tokens": torch.export.Dim("tokens", min=1, max=max(token_max, 2)),
        "rows": torch.export.Dim("rows", min=1, max=max(token_max, 2)),
    }
    names = iter(input_names)

    def spec(name):
        return {ax: dims[label] for ax, label in dynamic.get(name, {}).items()} or None

    return tuple([spec(next(names)) for _ in a] if isinstance(a, list) else spec(next(names)) for a in args)


def _export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic: dict[str, dict[int, str]],
    token_max: int,
    metadata: dict[str, str],
    prefer: str,
    flavour: str,
) -> ExportResult:
    """Export with the dynamo exporter (falling back to TorchScript for the copy flavour); check it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _param_bytes(module) > EXTERNAL_DATA_BYTES
    errors: list[str] = []
    if flavour == INPLACE:  # TensorScatter needs opset 24, which only the dynamo exporter writes
        order, opset = ["dynamo"], INPLACE_OPSET
    else:
        order, opset = (["dynamo", "torchscript"] if prefer == "dynamo" else ["torchscript", "dynamo"]), OPSET
    exporter_used = None
    # torch's ONNX registry warns about every optional library it does not find (torchvision, ...).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    for exporter in order:
        for stale in [path, *(_external_files(path) if path.exists() else [])]:
            stale.unlink(missing_ok=True)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if exporter == "dynamo":
                    from ..models import attention  # noqa: F401  (registers griffin::write_cache_run)

                    prog = torch.onnx.export(
                        module,
                        args,
                        input_names=list(input_names),
                        output_names=list(output_names),
                        opset_version=opset,
                        dynamo=True,
                        verbose=False,
                        dynamic_shapes=_dynamo_shapes(args, input_names, dynamic, token_max),
                        external_data=external,
                        optimize=True,
                        custom_translation_table={torch.ops.griffin.write_cache_run.default: _tensor_scatter},
                    )
                    prog.save(str(path), external_data=external)
                else:
                    torch.onnx.export(
                        module,
                        args,
                        str(path),
                        input_names=list(input_names),
                        output_names=list(output_names),
                        opset_version=opset,
                        dynamo=False,
                        dynamic_axes={k: dict(v) for k, v in dynamic.items()},
                        do_constant_folding=True,
                    )
            exporter_used = exporter
            break
        except Exception as e:  # noqa: BLE001 - any exporter failure falls through to the other one
            errors.append(f"{exporter} exporter: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            log.warning("ONNX export of %s with the %s exporter failed: %s", path.name, exporter, e)
    if exporter_used is None:
        raise ExportError(f"could not export {path.name}: " + " | ".join(errors))

    model = onnx.load(str(path), load_external_data=False)
    _check_io(model, input_names, output_names, path)
    if flavour == INPLACE:
        check_cache_updates(model, path.name)
    # Record what the graph was exported for, so a reader can cross-check it against a manifest.
    meta = dict(metadata, exporter=exporter_used, kv_flavour=flavour)
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model, str(path))  # external-data references are kept as they are
    onnx.checker.check_model(str(path))  # by path: works for graphs with external data too
    notes = [f"{path.name}: {exporter_used} exporter, {flavour} KV caches"] + [f"{path.name}: {e}" for e in errors]
    return ExportResult(path, exporter_used, [path, *_external_files(path)], notes)


def _check_io(model, inputs, outputs, path) -> None:
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(inputs) or got_out != list(outputs):
        raise ExportError(
            f"{path.name}: exported graph has inputs {got_in} and outputs {got_out}; "
            f"expected {list(inputs)} and {list(outputs)}"
        )


def check_cache_updates(model, where: str = "graph") -> None:
    """Every cache input of an inplace-flavour graph has its data read by exactly one node, a
    linear-mode TensorScatter on axis -2 whose output is the matching graph output: what lets TensorRT
    and onnxruntime write the cache in place (a second reader of the old cache would see new data).
    `Shape` nodes read no data and are allowed."""
    from onnx import helper

    from .kv_layout import cache_pairs

    g = model.graph
    outputs = {o.name for o in g.output}
    readers: dict[str, list] = {}
    for node in g.node:
        if node.op_type != "Shape":
            for name in node.input:
                readers.setdefault(name, []).append(node)
    for cache_in, cache_out in cache_pairs(i.name for i in g.input):
        nodes = readers.get(cache_in, [])
        node = nodes[0] if len(nodes) == 1 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if node is not None else {}
        rank = len(next(i for i in g.input if i.name == cache_in).type.tensor_type.shape.dim)
        ok = (
            node is not None and node.op_type == "TensorScatter" and list(node.input[:1]) == [cache_in]
            and list(node.output) == [cache_out] and cache_out in outputs
            and attrs.get("axis", -2) in (-2, rank - 2) and attrs.get("mode", b"linear") in (b"linear", "linear")
        )
        if not ok:
            found = [(n.op_type, list(n.output)) for n in nodes]
            raise ExportError(
                f"{where}: cache input {cache_in} must feed exactly one linear TensorScatter (axis -2) that writes "
                f"the output {cache_out}; found readers {found}"
            )


def _example_inputs(b: int, t: int, kv_len: int, vocab: int, device):
    tokens = torch.randint(0, vocab, (b, t), device=device)
    positions = torch.arange(t, device=device).expand(b, t).contiguous()
    return tokens, positions, positions.clone(), _example_mask(b, t, kv_len, device)


def export_target(
    target: torch.nn.Module, kv_len: int, path: Path, max_tokens: int, prefer: str = "dynamo", flavour: str = INPLACE
) -> ExportResult:
    """Export `TargetModel` (caches out-of-place) with static cache capacity `kv_len`."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown KV flavour {flavour!r}; choose one of {FLAVOURS}")
    target.use_static_experts()
    device = target.lm_head.weight.device
    # not 1, and all different: torch.export specialises size-1 axes and may merge equal-sized ones
    b, t, r = 2, 3, 4
    tokens, positions, write_index, mask = _example_inputs(b, t, kv_len, target.vocab_size, device)
    k_cache, v_cache = target.new_cache(b, kv_len)
    bt = {0: "batch", 1: "tokens"}
    names_in, names_out = target_io(flavour, target.num_layers)
    if flavour == COPY:
        module, args = target, (tokens, positions, write_index, mask, k_cache, v_cache)
        dynamic = {
            "tokens": bt, "positions": bt, "write_index": bt, "mask": bt,
            "k_cache": {1: "batch"}, "v_cache": {1: "batch"},
            "logits": bt, "hidden": bt, "k_cache_out": {1: "batch"}, "v_cache_out": {1: "batch"},
        }
    else:
        logit_index = torch.randint(0, t, (b, r), device=device)
        caches = [c[i] for i in range(target.num_layers) for c in (k_cache, v_cache)]
        module, args = _LayerCacheTarget(target), (tokens, positions, write_index, mask, logit_index, caches)
        dynamic = {n: bt for n in ("tokens", "positions", "write_index", "mask", "hidden")}
        dynamic.update(logit_index={0: "batch", 1: "rows"}, logits={0: "batch", 1: "rows"})
        dynamic.update({n: {0: "batch"} for n in names_in[5:] + names_out[2:]})
    meta = {
        "griffin_trt.graph": "target",
        "kv_len": kv_len,
        "num_layers": target.num_layers,
        "num_kv_heads": target.num_kv_heads,
        "head_dim": target.head_dim,
        "hidden_size": target.hidden_size,
        "vocab_size": target.vocab_size,
        "dtype": str(target.dtype).removeprefix("torch."),
    }
    with _export_mode(target, flavour):
        return _export(module, args, path, names_in, names_out, dynamic, max_tokens, meta, prefer, flavour)


def export_drafter(
    draft_step: torch.nn.Module, kv_len: int, path: Path, max_tokens: int, prefer: str = "dynamo",
    flavour: str = INPLACE,
) -> ExportResult:
    """Export `DraftStep` (drafter + the target's LM head + top-k) with cache capacity `kv_len`."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown KV flavour {flavour!r}; choose one of {FLAVOURS}")
    drafter = draft_step.drafter
    c = drafter.config
    w = drafter.fc.fc.weight
    b, t = 2, 3
    features = torch.randn(b, t, c.hidden_size, dtype=w.dtype, device=w.device)
    tokens, positions, write_index, mask = _example_inputs(b, t, kv_len, c.vocab_size, w.device)
    k_cache, v_cache = drafter.new_cache(b, kv_len)
    bt = {0: "batch", 1: "tokens"}
    names_in, names_out = drafter_io(flavour)
    dynamic = {n: bt for n in ("features", "tokens", "positions", "write_index", "mask", *names_out[:3])}
    dynamic.update({n: {0: "batch"} for n in names_in[5:] + names_out[3:]})
    if flavour == COPY:
        module, args = draft_step, (features, tokens, positions, write_index, mask, k_cache, v_cache)
    else:
        module, args = _LayerCacheDrafter(draft_step), (features, tokens, positions, write_index, mask, [k_cache, v_cache])
    meta = {
        "griffin_trt.graph": "drafter",
        "kv_len": kv_len,
        "top_k": draft_step.top_k,
        "num_layers": 1,
        "num_kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_size": c.hidden_size,
        "vocab_size": c.vocab_size,
        "dtype": str(w.dtype).removeprefix("torch."),
    }
    with _export_mode(draft_step, flavour):
        return _export(module, args, path, names_in, names_out, dynamic, max_tokens, meta, prefer, flavour)


def export_pair(pair, recipe, out_dir: Path, prefer: str = "dynamo", flavour: str = INPLACE) -> tuple[ExportResult, ExportResult]:
    """Export both graphs of a loaded `ModelPair` for `recipe` into `out_dir`."""
    out_dir = Path(out_dir)
    t = export_target(pair.target, recipe.target_kv_len, out_dir / "target.onnx", target_max_tokens(recipe), prefer,
                      flavour)
    d = export_drafter(pair.draft_step, recipe.drafter_kv_len, out_dir / "drafter.onnx", drafter_max_tokens(recipe),
                       prefer, flavour)
    return t, d


def target_max_tokens(recipe) -> int:
    tree, lim = recipe.tree, recipe.limits
    return max(lim.max_input_len, tree.tree_size, 2)


def drafter_max_tokens(recipe) -> int:
    tree, lim = recipe.tree, recipe.limits
    return max(lim.max_input_len, tree.max_accept, tree.top_k, tree.drafter_slots, 2)


def read_graph_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
