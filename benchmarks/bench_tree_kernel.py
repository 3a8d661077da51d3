"""Time the Triton tree kernels against the torch reference on CUDA.

    python benchmarks/bench_tree_kernel.py [--iters 200] [--check]

Prints one table row per shape: B, k, depth, total_tokens, then per op (expand = one frontier step,
finalize = select_tree + tree_from_parents, accept = greedy_accept) the reference and kernel times
in ms (CUDA events, after warm-up) and the speedup. Exits 0 with a message on hosts without CUDA.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SHAPES = [  # (B, k, depth, total_tokens)
    (1, 10, 5, 60),
    (4, 10, 5, 60),
    (8, 10, 5, 60),
    (1, 16, 6, 128),
    (4, 16, 6, 128),
    (1, 32, 4, 64),
]


def _time(fn, iters: int) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--check", action="store_true", help="also assert kernel == reference per shape")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_tree_kernel: no CUDA GPU here; the kernels are checked on CPU by tests/test_tree_kernels.py "
              "(TRITON_INTERPRET=1), timing needs a GPU.")
        return 0

    import _tree_kernel_cases as cases

    from griffin_trt.tree import expand_frontier, greedy_accept, select_tree
    from griffin_trt.tree.kernels import expand_frontier_triton, greedy_accept_triton, select_tree_triton

    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  iters {args.iters}")
    hdr = f"{'B':>3} {'k':>3} {'depth':>5} {'total':>5} | {'op':<8} {'ms ref':>8} {'ms kernel':>9} {'speedup':>7}"
    print(hdr)
    print("-" * len(hdr))
    g = torch.Generator().manual_seed(0)
    for b, k, depth, total in SHAPES:
        s = cases._q(-torch.rand(b, k, generator=g) * 3, 0.25).cuda()
        lp = cases._logp((b, k, k), g).cuda()
        ids = torch.randint(0, 32000, (b, k, k), generator=g).cuda()
        cand = [a.cuda() for a in cases.draft(b, k, depth, g, vocab=32000)]
        tree = select_tree(*cand, total, depth)
        logits = torch.randn(b, tree.size, 32000, device="cuda")
        rows = [
            ("expand", lambda: expand_frontier(s, lp, ids, k), lambda: expand_frontier_triton(s, lp, ids, k)),
            ("finalize", lambda: select_tree(*cand, total, depth), lambda: select_tree_triton(*cand, total, depth)),
            ("accept", lambda: greedy_accept(tree, logits), lambda: greedy_accept_triton(tree, logits)),
        ]
        if args.check:
            r, o = select_tree(*cand, total, depth), select_tree_triton(*cand, total, depth)
            assert all(torch.equal(getattr(r, n), getattr(o, n)) for n in ("tokens", "parents", "mask", "retrieve"))
        for op, ref_fn, ker_fn in rows:
            t_ref, t_ker = _time(ref_fn, args.iters), _time(ker_fn, args.iters)
            print(f"{b:>3} {k:>3} {depth:>5} {total:>5} | {op:<8} {t_ref:>8.3f} {t_ker:>9.3f} {t_ref / t_ker:>6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
