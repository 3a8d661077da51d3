"""ONNX graphs carrying the draft-tree plugin nodes (`griffin::DraftTreeExpand` / `DraftTreeFinalize`).

TensorRT's ONNX parser turns a node into a plugin layer when the node's op_type equals a registered
plugin's name and the node carries a `plugin_namespace` attribute (optionally `plugin_version`);
every other attribute becomes a plugin field. So the node here is op_type "DraftTreeExpand" in the
custom domain "griffin" with `plugin_namespace="griffin"`, `plugin_version="1"` and `top_k`.
Register the plugins first (`griffin_trt.tree.trt_plugin.load_plugin()`), then parse.

onnxruntime cannot run these graphs (no kernel for the custom op); `onnx.checker` accepts them.
Attributes are written in the order the plugin's register function declares them, which is also
alphabetical (the AOT path hands them to the implementation positionally, in field order).
"""
from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

PLUGIN_DOMAIN = "griffin"
PLUGIN_NAMESPACE = "griffin"
PLUGIN_VERSION = "1"
EXPAND_OP = "DraftTreeExpand"
FINALIZE_OP = "DraftTreeFinalize"
OPSET = 17

EXPAND_INPUTS = ("scores", "child_logp", "child_ids")
EXPAND_OUTPUTS = ("cand_scores", "cand_ids", "next_scores", "next_ids", "next_flat")
FINALIZE_INPUTS = ("root", "cand_scores", "cand_ids", "cand_parents", "cand_depths")
FINALIZE_OUTPUTS = ("tokens", "parents", "depths", "mask", "retrieve", "num_leaves")

Dim = int | str


def _plugin_node(op: str, inputs, outputs, name: str, attrs: list[tuple[str, int]]) -> onnx.NodeProto:
    """Node with attributes in the given order (helper.make_node would sort them by name), plugin ones last."""
    node = helper.make_node(op, list(inputs), list(outputs), name=name, domain=PLUGIN_DOMAIN)
    for key, value in [*attrs, ("plugin_namespace", PLUGIN_NAMESPACE), ("plugin_version", PLUGIN_VERSION)]:
        node.attribute.append(helper.make_attribute(key, value))
    return node


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(PLUGIN_DOMAIN, 1)],
        producer_name="griffin-trt",
    )
    model.ir_version = min(model.ir_version, 9)  # readable by TensorRT 10's parser and onnxruntime
    return model


def expand_graph(
    top_k: int,
    frontier: Dim = "F",
    children: Dim = "C",
    batch: Dim = "B",
    score_type: int = TensorProto.FLOAT,
    id_type: int = TensorProto.INT64,
) -> onnx.ModelProto:
    """One tree step: scores [B,F], child_logp [B,F,C], child_ids [B,F,C] -> the 5 expand outputs.

    top_k must not exceed F*C (the plugin's next_* outputs are exactly [B, top_k]).
    """
    if isinstance(frontier, int) and isinstance(children, int) and top_k > frontier * children:
        raise ValueError(f"top_k={top_k} exceeds F*C={frontier * children}")
    m: Dim = frontier * children if isinstance(frontier, int) and isinstance(children, int) else "FC"
    inputs = [
        helper.make_tensor_value_info("scores", score_type, [batch, frontier]),
        helper.make_tensor_value_info("child_logp", score_type, [batch, frontier, children]),
        helper.make_tensor_value_info("child_ids", id_type, [batch, frontier, children]),
    ]
    outputs = [
        helper.make_tensor_value_info("cand_scores", score_type, [batch, m]),
        helper.make_tensor_value_info("cand_ids", id_type, [batch, m]),
        helper.make_tensor_value_info("next_scores", score_type, [batch, top_k]),
        helper.make_tensor_value_info("next_ids", id_type, [batch, top_k]),
        helper.make_tensor_value_info("next_flat", id_type, [batch, top_k]),
    ]
    node = _plugin_node(EXPAND_OP, EXPAND_INPUTS, EXPAND_OUTPUTS, "draft_tree_expand", [("top_k", int(top_k))])
    return _model(helper.make_graph([node], "griffin_draft_tree_expand", inputs, outputs))


def finalize_graph(
    total_tokens: int,
    max_depth: int,
    candidates: Dim = "N",
    batch: Dim = "B",
    score_type: int = TensorProto.FLOAT,
    id_type: int = TensorProto.INT64,
) -> onnx.ModelProto:
    """Tree selection: root [B] + candidates [B,N] -> tokens/parents/depths/mask/retrieve/num_leaves.

    total_tokens (the tree size T, root included) must not exceed N + 1.
    """
    if isinstance(candidates, int) and total_tokens - 1 > candidates:
        raise ValueError(f"total_tokens - 1 = {total_tokens - 1} exceeds the {candidates} candidates")
    t = int(total_tokens)
    inputs = [
        helper.make_tensor_value_info("root", id_type, [batch]),
        helper.make_tensor_value_info("cand_scores", score_type, [batch, candidates]),
        helper.make_tensor_value_info("cand_ids", id_type, [batch, candidates]),
        helper.make_tensor_value_info("cand_parents", id_type, [batch, candidates]),
        helper.make_tensor_value_info("cand_depths", id_type, [batch, candidates]),
    ]
    outputs = [
        helper.make_tensor_value_info("tokens", id_type, [batch, t]),
        helper.make_tensor_value_info("parents", id_type, [batch, t]),
        helper.make_tensor_value_info("depths", id_type, [batch, t]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, [batch, t, t]),
        helper.make_tensor_value_info("retrieve", id_type, [batch, t, max_depth + 1]),
        helper.make_tensor_value_info("num_leaves", id_type, [batch]),
    ]
    node = _plugin_node(FINALIZE_OP, FINALIZE_INPUTS, FINALIZE_OUTPUTS, "draft_tree_finalize",
                        [("max_depth", int(max_depth)), ("total_tokens", t)])
    return _model(helper.make_graph([node], "griffin_draft_tree_finalize", inputs, outputs))


def save(model: onnx.ModelProto, path: str | Path, check: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_tree_graphs(out_dir: str | Path, top_k: int, total_tokens: int, max_depth: int) -> dict[str, Path]:
    """Write draft_tree_expand.onnx and draft_tree_finalize.onnx for a recipe's tree settings.

    The expand frontier is [B, top_k] with top_k children per node (F = C = top_k); the finalize
    graph takes the N = top_k + (max_depth - 1) * top_k^2 candidates one draft produces.
    """
    out = Path(out_dir)
    n = top_k + (max_depth - 1) * top_k * top_k
    return {
        "expand": save(expand_graph(top_k, frontier=top_k, children=top_k), out / "draft_tree_expand.onnx"),
        "finalize": save(finalize_graph(total_tokens, max_depth, candidates=n), out / "draft_tree_finalize.onnx"),
    }
