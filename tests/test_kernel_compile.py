"""The draft-tree kernels compile for Hopper (sm_90) with the block sizes the CUDA launchers pick at
serving shapes, and fit a Hopper SM's shared memory. No GPU needed: triton.compile runs its own
ptxas. The interpreter tests (test_tree_kernels.py) check the values; this checks that the compiled
path a GPU host takes builds at all, so its first run there does not start with a compile error."""
from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton", reason="OpenAI triton not installed (the `kernels` extra)")

HOPPER_SHARED_BYTES = 227 * 1024  # the most shared memory one block may use on sm_90


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.parametrize("top_k,depth,total", [(10, 5, 60), (16, 6, 128)])
def test_tree_kernels_compile_for_sm90_at_launch_block_sizes(top_k, depth, total, monkeypatch):
    if _interpreted():
        pytest.skip("TRITON_INTERPRET is set: kernels are interpreted in this process")
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", os.environ.get("TRITON_DEFAULT_FP_FUSION", "1"))
    from triton.backends.compiler import GPUTarget

    from griffin_trt.tree import kernels as K
    from griffin_trt.tree.trt_plugin import expand_signature, finalize_signature

    m = top_k * top_k  # one pass: k frontier nodes x k children
    n = top_k + depth * top_k * top_k  # candidates of one draft
    max_depth = depth + 1  # what the decoder passes to select
    accept_sig = {
        "tokens_ptr": "*i64", "parents_ptr": "*i64", "depths_ptr": "*i64", "mask_ptr": "*i1", "choice_ptr": "*i64",
        "T": "i32", "D": "i32", "path_ptr": "*i64", "count_ptr": "*i64", "bonus_ptr": "*i64",
        "BLOCK_T": "constexpr", "BLOCK_D": "constexpr",
    }
    cases = [
        (K.expand_kernel, expand_signature("fp32", "fp32", "i64"),
         {"BLOCK_I": min(K._p2(m), K.EXPAND_BLOCKS[0]), "BLOCK_J": min(K._p2(m), K.EXPAND_BLOCKS[1])}),
        (K.finalize_kernel, finalize_signature("fp32", "i64"), K.finalize_blocks(n, total, max_depth)),
        (K.accept_kernel, accept_sig, {"BLOCK_T": K._p2(total), "BLOCK_D": K._p2(max_depth + 1, 2)}),
    ]
    for kernel, sig, constexprs in cases:
        src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=constexprs)
        ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
        name = kernel.__name__ if hasattr(kernel, "__name__") else kernel.fn.__name__
        assert ck.asm.get("cubin"), f"{name}: no cubin"
        assert ".target sm_90" in ck.asm["ptx"], name
        assert ck.metadata.shared <= HOPPER_SHARED_BYTES, (name, constexprs, ck.metadata.shared)
