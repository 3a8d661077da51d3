"""TensorRT plugin wrapper + ONNX graph for the draft-tree ops.

CPU: the module imports without TensorRT; the AOT kernels compile to PTX (and assemble with ptxas)
with the launch-facing parameter list TensorRT expects; the ONNX graphs carry the plugin nodes.
GPU + TensorRT (`tensorrt` marker): parse the graph with the plugin loaded, build, run, compare.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from griffin_trt.builders import draft_tree_onnx as dto
from griffin_trt.tree import trt_plugin

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_TRITON = importlib.util.find_spec("triton") is not None


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---------------------------------------------------------------- module / registration


def test_import_never_fails_and_reports_availability() -> None:
    mod = importlib.import_module("griffin_trt.tree.trt_plugin")
    if not HAS_TRT:
        assert mod.is_available() is False
    assert mod.EXPAND_ID == "griffin::DraftTreeExpand"
    assert mod.FINALIZE_ID == "griffin::DraftTreeFinalize"


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_load_plugin_without_tensorrt_raises_clearly() -> None:
    with pytest.raises(trt_plugin.PluginUnavailable, match="TensorRT"):
        trt_plugin.load_plugin()


# ---------------------------------------------------------------- PTX for the AOT path


def test_strip_unused_params() -> None:
    ptx = (
        ".visible .entry k(\n\t.param .u64 .ptr .global .align 1 k_param_0,\n\t.param .u32 k_param_1,\n"
        "\t.param .u64 .ptr .global .align 1 k_param_2,\n\t.param .u64 .ptr .global .align 1 k_param_3\n)\n"
        "{\n\tld.param.b64 %rd1, [k_param_0];\n\tld.param.b32 %r1, [k_param_1];\n}\n"
    )
    out = trt_plugin.strip_unused_params(ptx, "k", 2)
    assert "k_param_2" not in out and "k_param_3" not in out
    assert re.search(r"k_param_1\s*\n\)", out)
    with pytest.raises(ValueError, match="reads parameter"):
        trt_plugin.strip_unused_params(ptx, "k", 1)
    assert trt_plugin.strip_unused_params(ptx, "k", 4) == ptx


def _ptxas() -> str | None:
    if shutil.which("ptxas"):
        return shutil.which("ptxas")
    try:
        import triton.backends.nvidia as nv
    except Exception:  # noqa: BLE001
        return None
    p = Path(nv.__file__).parent / "bin" / "ptxas"
    return str(p) if p.exists() else None


@pytest.mark.skipif(not HAS_TRITON, reason="OpenAI triton not installed")
@pytest.mark.parametrize("which", ["expand", "finalize"])
def test_aot_kernels_compile_to_ptx(which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _interpreted():
        pytest.skip("TRITON_INTERPRET is set: kernels are interpreted in this process")
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", os.environ.get("TRITON_DEFAULT_FP_FUSION", "1"))
    # PTX ISA 8.8 keeps the test independent of the local ptxas / driver versions
    if which == "expand":
        k = trt_plugin.compile_expand("fp32", "i64", arch=90, ptx_version=88)
        n_params = 11
    else:
        k = trt_plugin.compile_finalize(60, 5, "fp32", "i32", arch=90, ptx_version=88)
        n_params = 14
    entry = k.ptx[k.ptx.index(".entry"):]
    entry = entry[: entry.index(")")]
    params = re.findall(rf"{k.name}_param_(\d+)", entry)
    assert [int(p) for p in params] == list(range(n_params)), entry  # no trailing scratch pointers
    assert k.n_params == n_params and k.num_warps == 4 and k.shared >= 0
    assert ".version 8.8" in k.ptx and "sm_90" in k.ptx
    ptxas = _ptxas()
    if ptxas is None:
        pytest.skip("no ptxas to assemble the PTX")
    src = tmp_path / "k.ptx"
    src.write_text(k.ptx)
    proc = subprocess.run([ptxas, "-arch=sm_90a", str(src), "-o", str(tmp_path / "k.cubin")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_signatures_follow_the_aot_calling_convention() -> None:
    """TensorRT passes tensor inputs, then the extra int32 scalars, then tensor outputs."""
    for sig, n_in, n_scalar, n_out in [
        (trt_plugin.expand_signature(), 3, 3, 5),
        (trt_plugin.finalize_signature(), 5, 3, 6),
    ]:
        kinds = [("ptr" if v.startswith("*") else "scalar" if v != "constexpr" else "const") for v in sig.values()]
        assert kinds == ["ptr"] * n_in + ["scalar"] * n_scalar + ["ptr"] * n_out + ["const"] * (len(sig) - n_in - n_scalar - n_out)
    if HAS_TRITON and not _interpreted():
        from griffin_trt.tree import kernels

        assert list(trt_plugin.expand_signature()) == kernels.expand_kernel.arg_names
        assert list(trt_plugin.finalize_signature()) == kernels.finalize_kernel.arg_names


# ---------------------------------------------------------------- ONNX graphs


def test_expand_graph_carries_the_plugin_node(tmp_path: Path) -> None:
    model = dto.expand_graph(10, frontier=10, children=10)
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert node.op_type == "DraftTreeExpand" == trt_plugin.EXPAND_NAME
    assert node.domain == "griffin"
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"top_k": 10, "plugin_namespace": b"griffin", "plugin_version": b"1"}
    assert list(node.input) == ["scores", "child_logp", "child_ids"]
    assert list(node.output) == ["cand_scores", "cand_ids", "next_scores", "next_ids", "next_flat"]
    assert {o.domain: o.version for o in model.opset_import}["griffin"] == 1
    dims = [d.dim_value or d.dim_param for d in model.graph.output[2].type.tensor_type.shape.dim]
    assert dims == ["B", 10]
    path = dto.save(model, tmp_path / "e.onnx")
    assert onnx.load(str(path)).graph.node[0].op_type == "DraftTreeExpand"


def test_finalize_graph_attribute_order_matches_registration(tmp_path: Path) -> None:
    model = dto.finalize_graph(60, 5, candidates=410)
    onnx.checker.check_model(model, full_check=True)
    (node,) = model.graph.node
    assert node.op_type == "DraftTreeFinalize" == trt_plugin.FINALIZE_NAME
    names = [a.name for a in node.attribute]
    assert names == ["max_depth", "total_tokens", "plugin_namespace", "plugin_version"]
    assert names[:2] == sorted(names[:2])  # the plugin declares its attributes alphabetically
    out = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert out["mask"] == ["B", 60, 60] and out["retrieve"] == ["B", 60, 6] and out["num_leaves"] == ["B"]
    paths = dto.build_tree_graphs(tmp_path, top_k=10, total_tokens=60, max_depth=5)
    assert sorted(p.name for p in paths.values()) == ["draft_tree_expand.onnx", "draft_tree_finalize.onnx"]


def test_graph_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError):
        dto.expand_graph(17, frontier=4, children=4)
    with pytest.raises(ValueError):
        dto.finalize_graph(12, 3, candidates=10)


# ---------------------------------------------------------------- TensorRT end to end


def _build_engine(trt, model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], prefer: str):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(trt_plugin.network_flags(prefer))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError("ONNX parse failed: " + "\n".join(errs))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():
        profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "engine build failed"
    return trt.Runtime(logger).deserialize_cuda_engine(plan)


def _run(trt, engine, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ctx = engine.create_execution_context()
    torch_of = {trt.float32: torch.float32, trt.int32: torch.int32, trt.int64: torch.int64, trt.bool: torch.bool}
    outs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            ctx.set_input_shape(name, tuple(inputs[name].shape))
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            ctx.set_tensor_address(name, inputs[name].data_ptr())
        else:
            t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=torch_of[engine.get_tensor_dtype(name)], device="cuda")
            outs[name] = t
            ctx.set_tensor_address(name, t.data_ptr())
    stream = torch.cuda.current_stream()
    assert ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return outs


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.skipif(not HAS_TRT, reason="TensorRT not installed (GPU hosts only: the `trt` extra)")
@pytest.mark.parametrize("prefer", ["aot", "jit"])
def test_tensorrt_engine_matches_reference(prefer: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _tree_kernel_cases as cases

    from griffin_trt.tree import expand_frontier, select_tree

    trt = importlib.import_module("tensorrt")
    trt_plugin.load_plugin()
    assert {"DraftTreeExpand", "DraftTreeFinalize"} <= set(trt_plugin.plugin_creator_names())
    g = torch.Generator().manual_seed(21)
    b, k, depth, total = 2, 10, 5, 60

    # expand: frontier [B, k] with k children each
    s = cases._q(-torch.rand(b, k, generator=g) * 3, 0.25)
    lp = cases._logp((b, k, k), g)
    ids = torch.randint(0, 1000, (b, k, k), generator=g)
    engine = _build_engine(trt, dto.expand_graph(k, frontier=k, children=k, batch=b),
                           {"scores": (b, k), "child_logp": (b, k, k), "child_ids": (b, k, k)}, prefer)
    got = _run(trt, engine, {"scores": s.cuda(), "child_logp": lp.cuda(), "child_ids": ids.cuda()})
    for name, ref in zip(dto.EXPAND_OUTPUTS, expand_frontier(s, lp, ids, k)):
        assert torch.equal(got[name].cpu(), ref), name

    # finalize: one whole draft's candidates
    args = cases.draft(b, k, depth, g, vocab=1000)
    n = args[1].shape[1]
    engine = _build_engine(trt, dto.finalize_graph(total, depth, candidates=n, batch=b),
                           {"root": (b,), **{nm: (b, n) for nm in dto.FINALIZE_INPUTS[1:]}}, prefer)
    got = _run(trt, engine, dict(zip(dto.FINALIZE_INPUTS, (a.cuda() for a in args))))
    ref = select_tree(*args, total, depth)
    for name in dto.FINALIZE_OUTPUTS:
        assert torch.equal(got[name].cpu(), getattr(ref, name)), name
