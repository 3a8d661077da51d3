"""The TensorRT executor's binding logic over fake engines (no GPU, no TensorRT libraries).

tests/_fake_trt.py stands in for the engines with the real API's names (checked against the real
bindings in test_trt_bindings.py) and performs the KV-cache update on host memory through the
addresses it was bound to, so these tests see which buffer every call read and wrote.
"""
from __future__ import annotations

import json

import pytest
import torch

import _fake_trt as ft
from griffin_trt.builders.manifest import ManifestError
from griffin_trt.runtime.executors.base import LayerCaches, StackedCaches
from griffin_trt.runtime.executors.trt_executor import TrtExecutor

S_T, S_D = 24, 28


def _executor(tmp_path, **kw) -> TrtExecutor:
    manifest = ft.write_fake_build(tmp_path, s_t=S_T, s_d=S_D, **kw)
    trt = ft.module()
    return TrtExecutor(tmp_path, manifest, device="cpu", trt=trt, runtime=trt.Runtime())


def _step(ex, tokens, start, logit_index=None):
    b, t = tokens.shape
    w = start[:, None] + torch.arange(t)
    return ex.target_step(tokens, w, w, torch.ones(b, t, S_T, dtype=torch.bool), logit_index=logit_index)


def _last_launch(engine):
    return max((c for c in engine.contexts if c.launches), key=lambda c: len(c.launches)).launches[-1]


def test_in_place_pairs_share_one_static_buffer(tmp_path):
    ex = _executor(tmp_path)
    assert isinstance(ex._tc, LayerCaches) and isinstance(ex._dc, LayerCaches)
    assert ex.stream.handle == 0  # CPU: the stream is inert; on CUDA it is the executor's own
    ex.reset(2)
    _step(ex, torch.tensor([[5, 6, 7], [8, 9, 10]]), torch.tensor([0, 4]))
    first = _last_launch(ex.target.engine)
    for (cache_in, cache_out), buf in zip(ex._tc.pairs, ex._tc.full):
        assert first[cache_in] == first[cache_out] == buf.data_ptr()
    # written in place, at the run write_index[:, 0] + 0..T-1 of each row
    k0 = ex._tc.full[0][:, 0, :, 0]
    assert k0[0, :3].tolist() == [5, 6, 7] and k0[1, 4:7].tolist() == [8, 9, 10] and k0[1, :4].eq(0).all()
    _step(ex, torch.tensor([[1], [2]]), torch.tensor([3, 7]))
    assert {k: v for k, v in _last_launch(ex.target.engine).items() if "cache" in k} == \
        {k: v for k, v in first.items() if "cache" in k}  # static addresses from call to call
    assert ex._tc.full[0][:2, 0, :, 0][:, [3, 7]].tolist() == [[1, 0], [0, 2]]


def test_row_ranges_are_pointer_offsets_and_rows_move(tmp_path):
    ex = _executor(tmp_path)
    row_bytes = ex._tc.full[0][0].numel() * 4
    ex.select_rows(2, 4)
    _step(ex, torch.tensor([[11, 12], [13, 14]]), torch.tensor([1, 1]))
    launch = _last_launch(ex.target.engine)
    for (cache_in, cache_out), buf in zip(ex._tc.pairs, ex._tc.full):
        assert launch[cache_in] == launch[cache_out] == buf.data_ptr() + 2 * row_bytes
    k0 = ex._tc.full[0][:, 0, :, 0]
    assert k0[:2].eq(0).all() and k0[2, 1:3].tolist() == [11, 12] and k0[3, 1:3].tolist() == [13, 14]
    # rows outside the range keep their contents across a step on another range
    ex.select_rows(0, 1)
    _step(ex, torch.tensor([[9]]), torch.tensor([0]))
    assert ex._tc.full[0][3, 0, 1:3, 0].tolist() == [13, 14]
    ex.move_rows(3, 0)
    for buf in ex._tc.full + ex._dc.full:
        assert torch.equal(buf[0], buf[3])
    with pytest.raises(ValueError, match="outside"):
        ex.select_rows(3, 5)
    with pytest.raises(ValueError, match="outside"):
        ex.move_rows(0, 4)


def test_move_target_kv_moves_slots_of_the_selected_rows(tmp_path):
    ex = _executor(tmp_path)
    ex.select_rows(1, 3)
    _step(ex, torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), torch.tensor([0, 10]))
    ex.move_target_kv(torch.tensor([[2, 3], [12, 13]]), torch.tensor([[1, 2], [11, 12]]))
    for buf in ex._tc.full:
        assert buf[1, 0, :4, 0].tolist() == [1, 3, 4, 4] and buf[2, 0, 10:14, 0].tolist() == [5, 7, 8, 8]
        assert buf[0].eq(0).all() and buf[3].eq(0).all()


def test_logits_only_for_the_asked_rows(tmp_path):
    ex = _executor(tmp_path)
    ex.reset(2)
    logits, hidden = _step(ex, torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 0]), torch.tensor([[2], [1]]))
    assert logits.shape == (2, 1, 16) and hidden.shape == (2, 3, 8)
    ctx = max(ex.target.engine.contexts, key=lambda c: len(c.launches))
    assert ctx.shapes["logit_index"] == (2, 1)
    logits, _ = _step(ex, torch.tensor([[1], [2]]), torch.tensor([3, 3]))
    assert logits.shape == (2, 1, 16) and ctx.shapes["logit_index"] == (2, 1)


def test_narrowest_profile_and_contexts(tmp_path):
    ex = _executor(tmp_path)
    e = ex.target
    assert [(p.t_min, p.t_max) for p in e.profiles] == [(1, 8), (1, 4)]
    assert e.pick(2, 3) == 1 and e.pick(2, 6) == 0
    with pytest.raises(ValueError, match="no optimization profile"):
        e.pick(2, 9)
    for i, ctx in enumerate(e.engine.contexts):
        assert ctx.profile == i and ctx.device_memory == (e.scratch.data_ptr(), e.scratch.numel())


def test_non_contiguous_writes_are_refused_when_checked(tmp_path):
    ex = _executor(tmp_path)
    ex.reset(1)
    ex.verify_writes = True
    with pytest.raises(ValueError, match="contiguous runs"):
        ex.target_step(torch.tensor([[1, 2]]), torch.tensor([[0, 1]]), torch.tensor([[0, 2]]),
                       torch.ones(1, 2, S_T, dtype=torch.bool))


def test_engine_without_the_alias_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="does not update these KV caches in place.*k_cache_0_out"):
        _executor(tmp_path, alias=False)


def test_manifest_and_engine_flavours_must_agree(tmp_path):
    manifest = ft.write_fake_build(tmp_path, s_t=S_T, s_d=S_D)
    manifest["kv_flavour"] = "copy"
    trt = ft.module()
    with pytest.raises(ManifestError, match="inplace-flavour KV caches but the manifest says copy"):
        TrtExecutor(tmp_path, manifest, device="cpu", trt=trt, runtime=trt.Runtime())


def test_copy_flavour_double_buffers_and_refuses_rows(tmp_path):
    ex = _executor(tmp_path, flavour="copy")
    assert isinstance(ex._tc, StackedCaches)
    ex.reset(2)
    before = ex._tc.inputs()["k_cache"].data_ptr()
    logits, _ = _step(ex, torch.tensor([[1, 2, 3], [4, 5, 6]]), torch.tensor([0, 2]), torch.tensor([[2], [0]]))
    launch = _last_launch(ex.target.engine)
    assert launch["k_cache"] == before != launch["k_cache_out"]
    assert ex._tc.inputs()["k_cache"].data_ptr() == launch["k_cache_out"]  # swapped: the next call reads it
    assert logits.shape == (2, 1, 16)  # rows gathered from the engine's [B, T, V]
    k = ex._tc.inputs()["k_cache"]  # [L, B, KVH, S, D]
    assert k[1, 0, 0, :3, 0].tolist() == [1, 2, 3] and k[1, 1, 0, 2:5, 0].tolist() == [4, 5, 6]
    with pytest.raises(NotImplementedError, match="copy-flavour KV caches"):
        ex.select_rows(1, 2)
    with pytest.raises(NotImplementedError, match="copy-flavour KV caches"):
        ex.move_rows(0, 1)


# ------------------------------------------------------------------ TensorRT-RTX engines


def _rtx_executor(tmp_path, gpu=None, **kw) -> TrtExecutor:
    manifest = ft.write_fake_build(tmp_path, library="tensorrt-rtx", **kw)
    trt = ft.module()
    return TrtExecutor(tmp_path, manifest, device="cpu", trt=trt, runtime=trt.Runtime(), gpu=gpu)


def test_rtx_runtime_cache_is_kept_beside_the_engines(tmp_path):
    ex = _rtx_executor(tmp_path, s_t=S_T, s_d=S_D)
    contexts = ex.target.engine.contexts + ex.drafter.engine.contexts
    assert {id(c.runtime_cache) for c in contexts} == {id(ex.runtime_cache.cache)}  # one cache, every context
    assert not (tmp_path / "runtime.cache").exists()
    ex.reset(1)
    _step(ex, torch.tensor([[1, 2, 3]]), torch.tensor([0]))  # first run of a profile: kernels compiled, saved
    saved = json.loads((tmp_path / "runtime.cache").read_text())
    assert len(saved["kernels"]) == 1
    again = _rtx_executor(tmp_path, s_t=S_T, s_d=S_D)  # a restart loads them instead of compiling again
    assert again.runtime_cache.cache.kernels == saved["kernels"]
    (tmp_path / "runtime.cache").write_text(json.dumps({"gpu": "another", "kernels": ["x"]}))
    assert _rtx_executor(tmp_path, s_t=S_T, s_d=S_D).runtime_cache.cache.kernels == []  # a stale cache is dropped


def test_rtx_refuses_a_gpu_it_does_not_support(tmp_path):
    with pytest.raises(ManifestError, match=r"^TensorRT-RTX does not run on NVIDIA H200 \(compute capability 9\.0; "
                                            r"it supports .*8\.6.*\): build this deployment with `--backend tensorrt`"):
        _rtx_executor(tmp_path, gpu=("NVIDIA H200", (9, 0)))
    with pytest.raises(ManifestError, match=r'built for compute capability 8\.6, not NVIDIA GeForce RTX 4090 \(8\.9\): '
                                            r'add "8\.9" to \[build\] compute_capabilities'):
        _rtx_executor(tmp_path, gpu=("NVIDIA GeForce RTX 4090", (8, 9)), compute_capabilities=["8.6"])
    assert _rtx_executor(tmp_path, gpu=("NVIDIA A100", (8, 0))).spec.max_batch == 4
    # datacenter TensorRT engines were built on their GPU: no such check
    trt = ft.module()
    TrtExecutor(tmp_path, ft.write_fake_build(tmp_path), device="cpu", trt=trt, runtime=trt.Runtime(),
                gpu=("NVIDIA H200", (9, 0)))


def test_rtx_engines_are_checked_in_place_and_tree_steps_are_kernels(tmp_path):
    with pytest.raises(ManifestError, match="does not update these KV caches in place"):
        _rtx_executor(tmp_path, alias=False)
    ex = _rtx_executor(tmp_path)
    assert ex.tree_expand is None and ex.tree_ops().name in ("triton", "torch")  # no plugin engines
