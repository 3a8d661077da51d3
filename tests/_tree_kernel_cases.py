"""Random tree-op cases comparing the Triton kernels with the torch reference (exact equality).

Used two ways by tests/test_tree_kernels.py:
- CPU: `TRITON_INTERPRET=1 python tests/_tree_kernel_cases.py` in a subprocess (the interpreter
  must be on before triton decorates the kernels, and must not leak into other tests); prints JSON.
- CUDA: `run_group(group, "cuda")` in-process.
Scores are quantised and log-probs duplicated / zeroed so that ties are everywhere.
"""
from __future__ import annotations

import json
import sys
import time

import torch

GROUPS = ("expand", "expand_edge", "finalize", "finalize_edge", "accept")


def _q(x: torch.Tensor, step: float) -> torch.Tensor:
    return torch.round(x / step) * step


def _logp(shape, g, step=0.5) -> torch.Tensor:
    lp = _q(-torch.rand(*shape, generator=g) * 2.0, step)
    lp[lp.abs() < 0.3] = 0.0  # many exact zeros (and min(logp, 0) == 0 ties)
    return lp


def draft(b: int, k: int, depth: int, g: torch.Generator, vocab: int = 20):
    """Candidates of one dynamic draft (reference expand), numbered as dynamic.py documents."""
    from griffin_trt.tree import expand_frontier

    lp0 = _logp((b, 1, k), g)
    ids0 = torch.randint(0, vocab, (b, 1, k), generator=g)
    cs, ci, ns, _, nflat = expand_frontier(torch.zeros(b, 1), lp0, ids0, k)
    scores, ids, parents, depths = [cs], [ci], [torch.full((b, k), -1)], [torch.ones(b, k, dtype=torch.long)]
    front_idx, front_s, base = nflat, ns, k
    for i in range(depth - 1):
        lp = _logp((b, k, k), g)
        cid = torch.randint(0, vocab, (b, k, k), generator=g)
        cs, ci, ns, _, nflat = expand_frontier(front_s, lp, cid, k)
        scores.append(cs)
        ids.append(ci)
        parents.append(front_idx.repeat_interleave(k, dim=1))
        depths.append(torch.full((b, k * k), i + 2))
        front_idx, front_s, base = base + nflat, ns, base + k * k
    root = torch.randint(0, vocab, (b,), generator=g)
    return root, torch.cat(scores, 1), torch.cat(ids, 1), torch.cat(parents, 1), torch.cat(depths, 1)


def _same(name: str, a: torch.Tensor, b: torch.Tensor, ctx: str, fails: list[str]) -> None:
    b = b.cpu()
    same = a.dtype == b.dtype and a.shape == b.shape
    if same and a.is_floating_point():
        same = bool(((a == b) | (a.isnan() & b.isnan())).all())  # exact, NaN == NaN
    elif same:
        same = torch.equal(a, b)
    if not same:
        fails.append(f"{ctx} {name}: ref {a.dtype}{tuple(a.shape)} {a.flatten()[:24].tolist()} != "
                     f"kernel {b.dtype}{tuple(b.shape)} {b.flatten()[:24].tolist()}")


def _expand_case(s, lp, ids, k, dev, ctx, fails):
    from griffin_trt.tree import expand_frontier
    from griffin_trt.tree.kernels import expand_frontier_triton

    ref = expand_frontier(s, lp, ids, k)
    out = expand_frontier_triton(s.to(dev), lp.to(dev), ids.to(dev), k)
    for name, a, b in zip(("cand", "cand_ids", "next_scores", "next_ids", "next_flat"), ref, out):
        _same(name, a, b, ctx, fails)


def group_expand(dev: str, fails: list[str]) -> int:
    g = torch.Generator().manual_seed(1234)
    n = 0
    for b, f, c, k in [(1, 1, 4, 2), (2, 3, 3, 4), (3, 5, 5, 5), (4, 10, 10, 10), (2, 7, 6, 9), (1, 16, 16, 16),
                       (2, 9, 11, 3), (3, 4, 8, 8)]:
        s = _q(-torch.rand(b, f, generator=g) * 3, 0.25)
        s[:, ::2] = s[:, :1].clone()  # duplicated frontier scores
        lp = _logp((b, f, c), g)
        ids = torch.randint(0, 100, (b, f, c), generator=g)
        _expand_case(s, lp, ids, k, dev, f"expand b={b} f={f} c={c} k={k}", fails)
        n += 1
    return n


def group_expand_edge(dev: str, fails: list[str]) -> int:
    g = torch.Generator().manual_seed(7)
    n = 0
    b, f, c = 2, 4, 5
    s = torch.zeros(b, f)
    _expand_case(s, torch.zeros(b, f, c), torch.arange(b * f * c).view(b, f, c), 6, dev, "all-equal", fails)
    # positive log-probs are clamped to 0, -inf children, k > F*C, int32 ids, float64 scores
    lp = _logp((b, f, c), g)
    lp[0, 0, :2] = 0.7
    lp[1, 2, :] = float("-inf")
    ids = torch.randint(0, 9, (b, f, c), generator=g)
    _expand_case(_q(-torch.rand(b, f, generator=g), 0.5), lp, ids, 5, dev, "clamp/-inf", fails)
    _expand_case(s, lp, ids, f * c + 3, dev, "k>F*C", fails)
    _expand_case(s, lp, ids.int(), 4, dev, "int32 ids", fails)
    _expand_case(s.double(), lp.double(), ids, 4, dev, "float64", fails)
    _expand_case(s, lp.half(), ids, 4, dev, "fp32 scores + fp16 logp", fails)
    lpn = lp.clone()
    lpn[0, 1, 1] = float("nan")
    _expand_case(s, lpn, ids, 7, dev, "nan", fails)
    n += 7
    return n


def _tree_case(args, total_tokens, max_depth, dev, ctx, fails, mask_dtype=torch.bool):
    from griffin_trt.tree import select_tree
    from griffin_trt.tree.kernels import select_tree_triton

    ref = select_tree(*args, total_tokens, max_depth)
    out = select_tree_triton(*(a.to(dev) for a in args), total_tokens, max_depth, mask_dtype=mask_dtype)
    for name in ("tokens", "parents", "depths", "mask", "retrieve", "num_leaves"):
        a, b = getattr(ref, name), getattr(out, name)
        if name == "mask" and mask_dtype != torch.bool:
            b = b.bool()
        _same(name, a, b, ctx, fails)
    return ref, out


def group_finalize(dev: str, fails: list[str]) -> int:
    g = torch.Generator().manual_seed(99)
    n = 0
    for b, k, depth in [(1, 2, 1), (2, 3, 2), (3, 4, 3), (1, 5, 5), (2, 6, 4), (4, 2, 5), (1, 10, 5), (2, 8, 2)]:
        args = draft(b, k, depth, g)
        nc = args[1].shape[1]
        for tt in sorted({1, 2, 3, max(2, nc // 3), min(60, nc), nc + 1}):
            _tree_case(args, tt, depth, dev, f"finalize b={b} k={k} depth={depth} N={nc} total={tt}", fails)
            n += 1
    return n


def group_finalize_edge(dev: str, fails: list[str]) -> int:
    g = torch.Generator().manual_seed(5)
    args = draft(2, 3, 3, g)
    nc = args[1].shape[1]
    _tree_case(args, nc + 10, 3, dev, "total_tokens > N+1", fails)
    _tree_case(args, 8, 3, dev, "int8 mask", fails, mask_dtype=torch.int8)
    _tree_case(args, 8, 5, dev, "max_depth larger than the tree", fails)
    zero = (args[0], torch.zeros_like(args[1]), *args[2:])  # every score tied: creation order decides
    _tree_case(zero, 9, 3, dev, "all scores tied", fails)
    i32 = tuple(a.int() if a.dtype == torch.long else a for a in args)
    _tree_case(i32, 7, 3, dev, "int32 inputs", fails)
    return 5


def group_accept(dev: str, fails: list[str]) -> int:
    from griffin_trt.tree import greedy_accept
    from griffin_trt.tree.kernels import greedy_accept_triton, select_tree_triton

    g = torch.Generator().manual_seed(3)
    n = 0
    vocab = 20
    for b, k, depth, tt in [(1, 3, 2, 6), (2, 4, 3, 12), (3, 5, 4, 20), (4, 3, 5, 30), (2, 2, 1, 3)]:
        args = draft(b, k, depth, g, vocab)
        from griffin_trt.tree import select_tree

        ref_tree = select_tree(*args, tt, depth)
        ker_tree = select_tree_triton(*(a.to(dev) for a in args), tt, depth)
        for p_follow in (0.0, 0.5, 0.9, 1.0):
            choice = torch.randint(0, vocab, (b, ref_tree.size), generator=g)
            follow = torch.rand(b, ref_tree.size, generator=g) < p_follow
            for r in range(b):
                for j in range(1, ref_tree.size):
                    if follow[r, j]:
                        choice[r, ref_tree.parents[r, j]] = ref_tree.tokens[r, j]
            logits = torch.nn.functional.one_hot(choice, vocab).float() + 0.01 * torch.rand(b, ref_tree.size, vocab, generator=g)
            ref = greedy_accept(ref_tree, logits)
            out = greedy_accept_triton(ker_tree, logits.to(dev))
            for name, a, o in zip(("path", "count", "bonus"), ref, out):
                _same(name, a, o, f"accept b={b} k={k} depth={depth} total={tt} p={p_follow}", fails)
            n += 1
    return n


def run_group(group: str, dev: str = "cpu") -> tuple[int, list[str]]:
    fails: list[str] = []
    n = globals()[f"group_{group}"](dev, fails)
    return n, fails


def main(argv: list[str]) -> int:
    dev = argv[1] if len(argv) > 1 else "cpu"
    groups = argv[2].split(",") if len(argv) > 2 else GROUPS
    torch.set_num_threads(1)
    res = {}
    for grp in groups:
        t0 = time.perf_counter()
        try:
            n, fails = run_group(grp, dev)
        except Exception as e:  # noqa: BLE001 - report, the test asserts
            import traceback

            n, fails = 0, [f"{type(e).__name__}: {e}\n{traceback.format_exc()}"]
        res[grp] = {"cases": n, "failures": fails[:20], "seconds": round(time.perf_counter() - t0, 2)}
    print("RESULT_JSON " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
