"""Triton tree kernels == torch reference, bit for bit (ties everywhere).

CPU: the cases run once in a subprocess with TRITON_INTERPRET=1 (the interpreter has to be on when
triton decorates the kernels, and must not leak into this process or other test files).
CUDA: the same cases in-process, marked `gpu`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _tree_kernel_cases as cases  # noqa: E402

pytest.importorskip("triton", reason="OpenAI triton not installed (the `kernels` extra)")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(HERE / "_tree_kernel_cases.py"), "cpu"],
        cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT_JSON ")), None)
    assert line is not None, f"case runner failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(line[len("RESULT_JSON "):])


@pytest.mark.parametrize("group", cases.GROUPS)
def test_interpreter_matches_reference(interpreted: dict, group: str) -> None:
    res = interpreted[group]
    assert not res["failures"], "\n".join(res["failures"])
    assert res["cases"] > 0


def _in_process_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("group", cases.GROUPS)
def test_cuda_matches_reference(group: str) -> None:
    if _in_process_interpreter():
        pytest.skip("TRITON_INTERPRET is set in this process: kernels are interpreted, not compiled")
    n, fails = cases.run_group(group, "cuda")
    assert not fails, "\n".join(fails)
    assert n > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_large_tree_matches_reference() -> None:
    """Serving-size shapes: k=10 depth 5 (N=410), total 60; k=16 depth 6; B=8."""
    from griffin_trt.tree import select_tree
    from griffin_trt.tree.kernels import select_tree_triton

    if _in_process_interpreter():
        pytest.skip("TRITON_INTERPRET is set in this process")
    g = torch.Generator().manual_seed(11)
    for b, k, depth, tt in [(8, 10, 5, 60), (4, 16, 6, 128), (2, 32, 3, 96)]:
        args = cases.draft(b, k, depth, g, vocab=1000)
        ref = select_tree(*args, tt, depth)
        out = select_tree_triton(*(a.cuda() for a in args), tt, depth)
        for name in ("tokens", "parents", "depths", "mask", "retrieve", "num_leaves"):
            assert torch.equal(getattr(ref, name), getattr(out, name).cpu()), (b, k, depth, tt, name)


def test_cpu_tensors_without_interpreter_raise() -> None:
    if _in_process_interpreter():
        pytest.skip("TRITON_INTERPRET is set in this process")
    from griffin_trt.tree.kernels import expand_frontier_triton

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        expand_frontier_triton(torch.zeros(1, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 2)
