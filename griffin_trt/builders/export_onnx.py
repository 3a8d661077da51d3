"""Export the target step and the drafter step to ONNX: the graphs TensorRT parses and onnxruntime runs.

Two graphs, both with static KV-cache capacity and dynamic batch (B) and token (T) axes:

- `target.onnx`: (tokens, positions, write_index int64 [B, T], mask bool [B, T, S_t],
  k_cache, v_cache [L, B, KVH, S_t, D]) -> (logits f32 [B, T, V], hidden [B, T, H],
  k_cache_out, v_cache_out). T covers prefill (up to max_input_len), tree verification
  (tree_size) and plain decoding (1). S_t = recipe.target_kv_len.
- `drafter.onnx`: (features [B, T, H], tokens, positions, write_index int64 [B, T],
  mask bool [B, T, S_d], k_cache, v_cache [B, KVH, S_d, D]) -> (topk_logprobs f32 [B, T, k],
  topk_ids int64 [B, T, k], regress [B, T, H], k_cache_out, v_cache_out). The LM head and the top-k
  are inside; k = recipe.tree.top_k is baked in. S_d = recipe.drafter_kv_len.

The updated caches come back as whole outputs (the modules run with `inplace=False` during export);
executors swap them with the inputs after each call.

The dynamo exporter (torch.export) is tried first; the TorchScript exporter is the fallback.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

log = logging.getLogger(__name__)

OPSET = 18
# Above this many bytes of weights a graph keeps its weights in a side file (protobuf's 2 GiB limit).
EXTERNAL_DATA_BYTES = 1 << 30

TARGET_INPUTS = ("tokens", "positions", "write_index", "mask", "k_cache", "v_cache")
TARGET_OUTPUTS = ("logits", "hidden", "k_cache_out", "v_cache_out")
DRAFTER_INPUTS = ("features", "tokens", "positions", "write_index", "mask", "k_cache", "v_cache")
DRAFTER_OUTPUTS = ("topk_logprobs", "topk_ids", "regress", "k_cache_out", "v_cache_out")
# The cache inputs and the outputs that replace them after a call.
CACHE_PAIRS = (("k_cache", "k_cache_out"), ("v_cache", "v_cache_out"))


class ExportError(RuntimeError):
    """Both exporters failed, or the exported graph does not check; carries both reasons."""


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript"
    files: list[Path] = field(default_factory=list)  # the graph plus any external-data files
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _not_inplace(module: torch.nn.Module):
    """Switch a model's cache writes to out-of-place (caches become graph outputs) for the export."""
    flagged = [m for m in module.modules() if hasattr(m, "inplace")]
    saved = [m.inplace for m in flagged]
    for m in flagged:
        m.inplace = False
    try:
        yield
    finally:
        for m, s in zip(flagged, saved):
            m.inplace = s


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


def _export(
    module: torch.nn.Module,
    args: tuple,
    path: Path,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    dynamic: dict[str, dict[int, str]],
    token_max: int,
    opset: int,
    metadata: dict[str, str],
    prefer: str = "dynamo",
) -> ExportResult:
    """Export with the dynamo exporter, falling back to TorchScript; check the result."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _param_bytes(module) > EXTERNAL_DATA_BYTES
    errors: list[str] = []
    order = ["dynamo", "torchscript"] if prefer == "dynamo" else ["torchscript", "dynamo"]
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
                    dims = {
                        "batch": torch.export.Dim("batch", min=1, max=4096),
                        "tokens": torch.export.Dim("tokens", min=1, max=max(token_max, 2)),
                    }
                    shapes = {
                        name: {ax: dims[label] for ax, label in dynamic.get(name, {}).items()} or None
                        for name in input_names
                    }
                    prog = torch.onnx.export(
                        module,
                        args,
                        input_names=list(input_names),
                        output_names=list(output_names),
                        opset_version=opset,
                        dynamo=True,
                        verbose=False,
                        dynamic_shapes=shapes,
                        external_data=external,
                        optimize=True,
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
    # Record what the graph was exported for, so a reader can cross-check it against a manifest.
    meta = dict(metadata, exporter=exporter_used)
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model, str(path))  # external-data references are kept as they are
    onnx.checker.check_model(str(path))  # by path: works for graphs with external data too
    notes = [f"{path.name}: {exporter_used} exporter"] + [f"{path.name}: {e}" for e in errors]
    return ExportResult(path, exporter_used, [path, *_external_files(path)], notes)


def _check_io(model, inputs, outputs, path) -> None:
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(inputs) or got_out != list(outputs):
        raise ExportError(
            f"{path.name}: exported graph has inputs {got_in} and outputs {got_out}; "
            f"expected {list(inputs)} and {list(outputs)}"
        )


def export_target(
    target: torch.nn.Module, kv_len: int, path: Path, max_tokens: int, opset: int = OPSET, prefer: str = "dynamo"
) -> ExportResult:
    """Export `TargetModel` (caches out-of-place) with static cache capacity `kv_len`."""
    device = target.lm_head.weight.device
    b, t = 2, 3  # not 1: torch.export would specialise size-1 axes
    tokens = torch.randint(0, target.vocab_size, (b, t), device=device)
    positions = torch.arange(t, device=device).expand(b, t).contiguous()
    write_index = positions.clone()
    mask = _example_mask(b, t, kv_len, device)
    k_cache, v_cache = target.new_cache(b, kv_len)
    bt = {0: "batch", 1: "tokens"}
    dynamic = {
        "tokens": bt, "positions": bt, "write_index": bt, "mask": bt,
        "k_cache": {1: "batch"}, "v_cache": {1: "batch"},
        "logits": bt, "hidden": bt, "k_cache_out": {1: "batch"}, "v_cache_out": {1: "batch"},
    }
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
    with _not_inplace(target):
        return _export(
            target, (tokens, positions, write_index, mask, k_cache, v_cache), path,
            TARGET_INPUTS, TARGET_OUTPUTS, dynamic, max_tokens, opset, meta, prefer,
        )


def export_drafter(
    draft_step: torch.nn.Module, kv_len: int, path: Path, max_tokens: int, opset: int = OPSET, prefer: str = "dynamo"
) -> ExportResult:
    """Export `DraftStep` (drafter + the target's LM head + top-k) with cache capacity `kv_len`."""
    drafter = draft_step.drafter
    c = drafter.config
    w = drafter.fc.fc.weight
    b, t = 2, 3
    features = torch.randn(b, t, c.hidden_size, dtype=w.dtype, device=w.device)
    tokens = torch.randint(0, c.vocab_size, (b, t), device=w.device)
    positions = torch.arange(t, device=w.device).expand(b, t).contiguous()
    write_index = positions.clone()
    mask = _example_mask(b, t, kv_len, w.device)
    k_cache, v_cache = drafter.new_cache(b, kv_len)
    bt = {0: "batch", 1: "tokens"}
    dynamic = {
        "features": bt, "tokens": bt, "positions": bt, "write_index": bt, "mask": bt,
        "k_cache": {0: "batch"}, "v_cache": {0: "batch"},
        "topk_logprobs": bt, "topk_ids": bt, "regress": bt, "k_cache_out": {0: "batch"}, "v_cache_out": {0: "batch"},
    }
    meta = {
        "griffin_trt.graph": "drafter",
        "kv_len": kv_len,
        "top_k": draft_step.top_k,
        "num_kv_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "hidden_size": c.hidden_size,
        "vocab_size": c.vocab_size,
        "dtype": str(w.dtype).removeprefix("torch."),
    }
    with _not_inplace(draft_step):
        return _export(
            draft_step, (features, tokens, positions, write_index, mask, k_cache, v_cache), path,
            DRAFTER_INPUTS, DRAFTER_OUTPUTS, dynamic, max_tokens, opset, meta, prefer,
        )


def export_pair(pair, recipe, out_dir: Path, opset: int = OPSET, prefer: str = "dynamo") -> tuple[ExportResult, ExportResult]:
    """Export both graphs of a loaded `ModelPair` for `recipe` into `out_dir`."""
    out_dir = Path(out_dir)
    tree, lim = recipe.tree, recipe.limits
    target_max_t = max(lim.max_input_len, tree.tree_size, 2)
    drafter_max_t = max(lim.max_input_len, tree.max_accept, tree.top_k, tree.drafter_slots, 2)
    t = export_target(pair.target, recipe.target_kv_len, out_dir / "target.onnx", target_max_t, opset, prefer)
    d = export_drafter(pair.draft_step, recipe.drafter_kv_len, out_dir / "drafter.onnx", drafter_max_t, opset, prefer)
    return t, d


def read_graph_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
