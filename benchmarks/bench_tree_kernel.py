"""Time the Triton tree kernels against the torch reference on CUDA.

    python benchmarks/bench_tree_kernel.py [--iters 200] [--check] [--device auto|cpu|cuda] [--json out.json]

Prints one table row per shape: B, k, depth, total_tokens, then per op (expand = one frontier step,
finalize = select_tree + tree_from_parents, accept = greedy_accept) the reference and kernel times
in ms (median of timed runs after warm-up, CUDA events) and the speedup. Without CUDA it times the
torch reference alone at the serving-default shapes (the kernel columns stay empty).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = [  # (B, k, depth, total_tokens)
    (1, 10, 5, 60),
    (4, 10, 5, 60),
    (8, 10, 5, 60),
    (1, 16, 6, 128),
    (4, 16, 6, 128),
    (1, 32, 4, 64),
]


SMALL_SHAPES = [(1, 10, 5, 60), (4, 10, 5, 60), (8, 10, 5, 60)]  # CPU runs: the serving default only


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200, help="timed runs per figure (median)")
    ap.add_argument("--check", action="store_true", help="also assert kernel == reference per shape")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="cpu: times the torch reference only (kernels need CUDA, or the interpreter in tests)")
    ap.add_argument("--shapes", choices=("all", "small"), default=None, help="default: all on CUDA, small on CPU")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU")
    dev = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)
        print("bench_tree_kernel: no CUDA here: timing the torch reference only; the kernels are checked on CPU "
              "by tests/test_tree_kernels.py (TRITON_INTERPRET=1), their timing needs a GPU.")

    import _tree_kernel_cases as cases
    from timing import median_ms

    from griffin_trt.tree import expand_frontier, greedy_accept, select_tree

    if cuda:
        from griffin_trt.tree.kernels import expand_frontier_triton, greedy_accept_triton, select_tree_triton

    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device: {name}  torch {torch.__version__}  iters {args.iters}")
    hdr = f"{'B':>3} {'k':>3} {'depth':>5} {'total':>5} | {'op':<8} {'ms ref':>8} {'ms kernel':>9} {'speedup':>7}"
    print(hdr)
    print("-" * len(hdr))
    g = torch.Generator().manual_seed(0)
    rows = []
    for b, k, depth, total in SHAPES if (args.shapes or ("all" if cuda else "small")) == "all" else SMALL_SHAPES:
        s = cases._q(-torch.rand(b, k, generator=g) * 3, 0.25).to(dev)
        lp = cases._logp((b, k, k), g).to(dev)
        ids = torch.randint(0, 32000, (b, k, k), generator=g).to(dev)
        cand = [a.to(dev) for a in cases.draft(b, k, depth, g, vocab=32000)]
        tree = select_tree(*cand, total, depth)
        logits = torch.randn(b, tree.size, 32000, device=dev)
        ops = [
            ("expand", lambda: expand_frontier(s, lp, ids, k), cuda and (lambda: expand_frontier_triton(s, lp, ids, k))),
            ("finalize", lambda: select_tree(*cand, total, depth),
             cuda and (lambda: select_tree_triton(*cand, total, depth))),
            ("accept", lambda: greedy_accept(tree, logits), cuda and (lambda: greedy_accept_triton(tree, logits))),
        ]
        checked = None
        if args.check and cuda:
            r, o = select_tree(*cand, total, depth), select_tree_triton(*cand, total, depth)
            checked = all(torch.equal(getattr(r, n), getattr(o, n)) for n in ("tokens", "parents", "mask", "retrieve"))
            assert checked, (b, k, depth, total)
        for op, ref_fn, ker_fn in ops:
            t_ref = median_ms(ref_fn, dev, reps=args.iters, warmup=5)
            t_ker = median_ms(ker_fn, dev, reps=args.iters, warmup=5) if ker_fn else None
            ratio = t_ref / t_ker if t_ker else None
            rows.append({"batch": b, "top_k": k, "depth": depth, "total_tokens": total, "op": op, "ref_ms": t_ref,
                         "kernel_ms": t_ker, "speedup": ratio, "kernel_equals_reference": checked})
            ker = f"{t_ker:>9.3f} {ratio:>6.1f}x" if t_ker else f"{'-':>9} {'-':>7}"
            print(f"{b:>3} {k:>3} {depth:>5} {total:>5} | {op:<8} {t_ref:>8.3f} {ker}")
    if args.json:
        env = {"device": dev.type, "device_name": name, "torch": torch.__version__, "iters": args.iters}
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
