"""The draft-tree ops as OpenAI-Triton kernels, bit-exact with the torch reference.

- `expand_kernel`   == `dynamic.expand_frontier` (cumulative scores + stable top-k frontier)
- `finalize_kernel` == `dynamic.select_tree` + `structure.tree_from_parents`
- `accept_kernel`   == `accept.greedy_accept` given the target's argmax per column

Stable top-k without sorting: element i's rank is the number of elements that beat it under
(value descending, index ascending, NaN above everything like torch's descending sort). Ranks are a
permutation, so `rank < k` selects exactly the reference's top-k and `rank` is its output slot.

Kernel calling convention (what TensorRT's AOT Python plugins require): tensor inputs first, then
int32 scalars, then tensor outputs, then constexpr block sizes. All tensors are dense row-major.

The launchers (`expand_frontier_triton`, `select_tree_triton`, `greedy_accept_triton`) take and
return what the reference functions do. They run on CUDA tensors, and on CPU tensors when
TRITON_INTERPRET=1 was set before triton was first imported (see `interpreter_active`).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .structure import DraftTree

__all__ = [
    "accept_kernel",
    "expand_frontier_triton",
    "expand_kernel",
    "finalize_kernel",
    "greedy_accept_from_choice_triton",
    "greedy_accept_triton",
    "interpreter_active",
    "launch_expand",
    "launch_finalize",
    "select_tree_triton",
]


def interpreter_active() -> bool:
    """True when triton kernels run in the CPU interpreter (env read at import time by triton)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _beats(v_j, j, v_i, i):
    """[I, J] mask: element j is ranked before element i (desc value, NaN first, asc index)."""
    vj = v_j[None, :]
    vi = v_i[:, None]
    nan_j = vj != vj
    nan_i = vi != vi
    earlier = j[None, :] < i[:, None]
    same = (vj == vi) | (nan_j & nan_i)
    return (vj > vi) | (nan_j & (~nan_i)) | (same & earlier)


@triton.jit
def _cand_values(scores_ptr, logp_ptr, row, idx, msk, F, C, OUT_TY: tl.constexpr):
    """Candidate scores of flat indices `idx` of one batch row: scores[f] + min(logp[f, c], 0)."""
    s = tl.load(scores_ptr + row * F + idx // C, mask=msk, other=0.0).to(tl.float32)
    lp = tl.load(logp_ptr + row * F * C + idx, mask=msk, other=0.0).to(tl.float32)
    lp = tl.minimum(lp, 0.0, propagate_nan=tl.PropagateNan.ALL)
    return (s + lp).to(OUT_TY)


@triton.jit
def expand_kernel(
    scores_ptr,  # [B, F]
    logp_ptr,  # [B, F, C]
    ids_ptr,  # [B, F, C]
    F,
    C,
    K,  # frontier size kept (<= F*C)
    cand_ptr,  # [B, F*C]
    cand_ids_ptr,  # [B, F*C]
    next_scores_ptr,  # [B, K]
    next_ids_ptr,  # [B, K]
    next_flat_ptr,  # [B, K]
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
):
    """Grid (B, cdiv(F*C, BLOCK_I)): each program ranks BLOCK_I candidates against all F*C."""
    row = tl.program_id(0)
    blk = tl.program_id(1)
    M = F * C
    out_ty = cand_ptr.dtype.element_ty
    i = blk * BLOCK_I + tl.arange(0, BLOCK_I)
    im = i < M
    v_i = _cand_values(scores_ptr, logp_ptr, row, i, im, F, C, out_ty)
    id_i = tl.load(ids_ptr + row * M + i, mask=im, other=0)
    tl.store(cand_ptr + row * M + i, v_i, mask=im)
    tl.store(cand_ids_ptr + row * M + i, id_i.to(cand_ids_ptr.dtype.element_ty), mask=im)

    rank = tl.zeros([BLOCK_I], dtype=tl.int32)
    for j0 in range(0, M, BLOCK_J):
        j = j0 + tl.arange(0, BLOCK_J)
        jm = j < M
        v_j = _cand_values(scores_ptr, logp_ptr, row, j, jm, F, C, out_ty)
        b = _beats(v_j, j, v_i, i) & jm[None, :]
        rank += tl.sum(b.to(tl.int32), axis=1)

    sel = im & (rank < K)
    tl.store(next_scores_ptr + row * K + rank, v_i, mask=sel)
    tl.store(next_ids_ptr + row * K + rank, id_i.to(next_ids_ptr.dtype.element_ty), mask=sel)
    tl.store(next_flat_ptr + row * K + rank, i.to(next_flat_ptr.dtype.element_ty), mask=sel)


@triton.jit
def finalize_kernel(
    root_ptr,  # [B]
    cs_ptr,  # [B, N] candidate scores
    cid_ptr,  # [B, N] candidate token ids
    cpar_ptr,  # [B, N] parent candidate index (-1: the root)
    cdep_ptr,  # [B, N] candidate depth
    N,
    T,  # tree size = min(total_tokens - 1, N) + 1
    MAX_DEPTH,
    tokens_ptr,  # [B, T]
    parents_ptr,  # [B, T] (also scratch for the kept candidate indices)
    depths_ptr,  # [B, T]
    mask_ptr,  # [B, T, T]
    retrieve_ptr,  # [B, T, MAX_DEPTH + 1]
    nleaves_ptr,  # [B]
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Grid (B,): one program per tree."""
    row = tl.program_id(0)
    n_keep = T - 1
    D = MAX_DEPTH + 1
    par_ty = parents_ptr.dtype.element_ty

    # 1) keep the n_keep best candidates; a kept candidate's column is 1 + #kept before it.
    carry = 0
    for i0 in range(0, N, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        im = i < N
        v_i = tl.load(cs_ptr + row * N + i, mask=im, other=0.0)
        rank = tl.zeros([BLOCK_I], dtype=tl.int32)
        for j0 in range(0, N, BLOCK_J):
            j = j0 + tl.arange(0, BLOCK_J)
            jm = j < N
            v_j = tl.load(cs_ptr + row * N + j, mask=jm, other=0.0)
            b = _beats(v_j, j, v_i, i) & jm[None, :]
            rank += tl.sum(b.to(tl.int32), axis=1)
        sel = im & (rank < n_keep)
        sel_i = sel.to(tl.int32)
        col = carry + tl.cumsum(sel_i, axis=0)
        tok = tl.load(cid_ptr + row * N + i, mask=sel, other=0)
        dep = tl.load(cdep_ptr + row * N + i, mask=sel, other=0)
        tl.store(tokens_ptr + row * T + col, tok.to(tokens_ptr.dtype.element_ty), mask=sel)
        tl.store(depths_ptr + row * T + col, dep.to(depths_ptr.dtype.element_ty), mask=sel)
        tl.store(parents_ptr + row * T + col, i.to(par_ty), mask=sel)
        carry += tl.sum(sel_i, axis=0)

    c = tl.arange(0, BLOCK_T)
    cm = c < T
    is_root = c == 0
    root = tl.load(root_ptr + row + c * 0, mask=is_root, other=0)
    tl.store(tokens_ptr + row * T + c, root.to(tokens_ptr.dtype.element_ty), mask=is_root)
    tl.store(depths_ptr + row * T + c, tl.zeros([BLOCK_T], tl.int32).to(depths_ptr.dtype.element_ty), mask=is_root)
    tl.debug_barrier()

    # 2) parent column of every kept candidate: 1 + #kept candidates before the parent (searchsorted).
    km = cm & (c >= 1)
    keep = tl.load(parents_ptr + row * T + c, mask=km, other=0).to(tl.int32)
    pc = tl.load(cpar_ptr + row * N + keep, mask=km, other=-1).to(tl.int32)
    pc0 = tl.maximum(pc, 0)
    before = (keep[None, :] < pc0[:, None]) & km[None, :]
    par = tl.sum(before.to(tl.int32), axis=1) + 1
    par = tl.where(pc < 0, 0, par)
    par = tl.where(is_root, -1, par)
    tl.debug_barrier()
    tl.store(parents_ptr + row * T + c, par.to(par_ty), mask=cm)
    tl.debug_barrier()

    # 3) ancestors by pointer jumping (MAX_DEPTH jumps) -> mask rows and per-depth path columns.
    d = tl.arange(0, BLOCK_D)
    cur = c
    anc = (c[None, :] == cur[:, None]) & cm[None, :]
    dep_cur = tl.load(depths_ptr + row * T + cur, mask=cm, other=-1).to(tl.int32)
    path = tl.full([BLOCK_T, BLOCK_D], -1, tl.int32)
    hit = (d[None, :] == dep_cur[:, None]) & (d[None, :] < D)
    path = tl.where(hit, tl.maximum(path, cur[:, None]), path)
    for _ in range(0, MAX_DEPTH):
        p = tl.load(parents_ptr + row * T + cur, mask=cm & (cur > 0), other=0).to(tl.int32)
        cur = tl.where(cur > 0, p, cur)
        anc = anc | ((c[None, :] == cur[:, None]) & cm[None, :])
        dep_cur = tl.load(depths_ptr + row * T + cur, mask=cm, other=-1).to(tl.int32)
        hit = (d[None, :] == dep_cur[:, None]) & (d[None, :] < D)
        path = tl.where(hit, tl.maximum(path, cur[:, None]), path)
    mm = cm[:, None] & cm[None, :]
    tl.store(mask_ptr + row * T * T + c[:, None] * T + c[None, :], anc.to(mask_ptr.dtype.element_ty), mask=mm)

    # 4) leaves (nodes nobody points at), in column order: their paths are the retrieve rows.
    is_par = tl.sum(((par[:, None] == c[None, :]) & km[:, None]).to(tl.int32), axis=0) > 0
    leaf = cm & (~is_par)
    leaf_i = leaf.to(tl.int32)
    n_leaves = tl.sum(leaf_i, axis=0)
    leaf_row = tl.cumsum(leaf_i, axis=0) - 1
    rmask = leaf[:, None] & (d[None, :] < D)
    r_ty = retrieve_ptr.dtype.element_ty
    tl.store(retrieve_ptr + row * T * D + leaf_row[:, None] * D + d[None, :], path.to(r_ty), mask=rmask)
    empty = (c >= n_leaves) & cm
    neg = tl.full([BLOCK_T, BLOCK_D], -1, tl.int32).to(r_ty)
    tl.store(retrieve_ptr + row * T * D + c[:, None] * D + d[None, :], neg, mask=empty[:, None] & (d[None, :] < D))
    nl = tl.zeros([BLOCK_T], tl.int32) + n_leaves
    tl.store(nleaves_ptr + row + c * 0, nl.to(nleaves_ptr.dtype.element_ty), mask=is_root)


@triton.jit
def accept_kernel(
    tokens_ptr,  # [B, T]
    parents_ptr,  # [B, T]
    depths_ptr,  # [B, T]
    mask_ptr,  # [B, T, T]
    choice_ptr,  # [B, T] the target's argmax at every column
    T,
    D,  # path length = retrieve.shape[2] = max_depth + 1
    path_ptr,  # [B, D]
    count_ptr,  # [B]
    bonus_ptr,  # [B]
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Grid (B,): greedy acceptance of one tree."""
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK_T)
    cm = c < T
    tok = tl.load(tokens_ptr + row * T + c, mask=cm, other=0)
    par = tl.load(parents_ptr + row * T + c, mask=cm, other=0).to(tl.int32)
    dep = tl.load(depths_ptr + row * T + c, mask=cm, other=0).to(tl.int32)
    pch = tl.load(choice_ptr + row * T + tl.maximum(par, 0), mask=cm, other=0)
    correct = (tok == pch) | (par < 0)
    mm = cm[:, None] & cm[None, :]
    m = tl.load(mask_ptr + row * T * T + c[:, None] * T + c[None, :], mask=mm, other=0) != 0
    bad = m & (~correct[None, :]) & mm
    accepted = (tl.sum(bad.to(tl.int32), axis=1) == 0) & cm
    key = tl.where(accepted, dep, -1)
    key = tl.where(cm, key, -2)
    best_key = tl.max(key, axis=0)
    best = tl.min(tl.where(key == best_key, c, BLOCK_T), axis=0)
    is_best = c == best
    count = tl.sum(tl.where(is_best, dep, 0), axis=0) + 1
    chc = tl.load(choice_ptr + row * T + c, mask=cm, other=0)
    bonus = tl.sum(tl.where(is_best, chc, 0), axis=0)
    # path: the best node's mask row, each ancestor at its depth
    brow = tl.load(mask_ptr + row * T * T + best * T + c, mask=cm, other=0) != 0
    d = tl.arange(0, BLOCK_D)
    hit = brow[:, None] & (dep[:, None] == d[None, :]) & cm[:, None]
    path = tl.max(tl.where(hit, c[:, None], -1), axis=0)
    tl.store(path_ptr + row * D + d, path.to(path_ptr.dtype.element_ty), mask=d < D)
    first = c == 0
    tl.store(count_ptr + row + c * 0, (tl.zeros([BLOCK_T], tl.int32) + count).to(count_ptr.dtype.element_ty), mask=first)
    tl.store(bonus_ptr + row + c * 0, (tl.zeros([BLOCK_T], bonus.dtype) + bonus).to(bonus_ptr.dtype.element_ty), mask=first)


# ----------------------------------------------------------------------------------------------
# launchers


def _p2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(max(1, int(x))))


EXPAND_BLOCKS = (64, 128)  # default (BLOCK_I, BLOCK_J) caps


def launch_expand(scores, logp, ids, k, cand, cand_ids, nxt_s, nxt_id, nxt_flat, *, block_i=None, block_j=None) -> None:
    """Launch `expand_kernel` on dense tensors into preallocated outputs (also used by the plugin)."""
    b, f, c = logp.shape
    m = f * c
    bi = block_i or min(_p2(m), EXPAND_BLOCKS[0])
    bj = block_j or min(_p2(m), EXPAND_BLOCKS[1])
    grid = (b, triton.cdiv(m, bi))
    expand_kernel[grid](scores, logp, ids, f, c, int(k), cand, cand_ids, nxt_s, nxt_id, nxt_flat,
                        BLOCK_I=bi, BLOCK_J=bj)


def finalize_blocks(n: int, t: int, max_depth: int) -> dict:
    return dict(BLOCK_I=min(_p2(n), 64), BLOCK_J=min(_p2(n), 128), BLOCK_T=_p2(t), BLOCK_D=_p2(max_depth + 1, 2))


def launch_finalize(root, cs, cid, cpar, cdep, max_depth, tokens, parents, depths, mask, retrieve, num_leaves,
                    *, block_i=None, block_j=None) -> None:
    """Launch `finalize_kernel` into preallocated outputs; T is taken from `tokens`."""
    b, n = cs.shape
    t = tokens.shape[1]
    blocks = finalize_blocks(n, t, max_depth)
    if block_i:
        blocks["BLOCK_I"] = block_i
    if block_j:
        blocks["BLOCK_J"] = block_j
    finalize_kernel[(b,)](root, cs, cid, cpar, cdep, n, t, int(max_depth),
                          tokens, parents, depths, mask, retrieve, num_leaves, **blocks)


def _check_device(*ts: torch.Tensor) -> None:
    dev = ts[0].device
    for t in ts:
        if t.device != dev:
            raise ValueError(f"tensors on different devices: {t.device} vs {dev}")
    if dev.type == "cpu" and not interpreter_active():
        raise RuntimeError(
            "triton kernels need CUDA tensors; on CPU set TRITON_INTERPRET=1 before importing triton"
        )


def expand_frontier_triton(
    scores: torch.Tensor,
    child_logp: torch.Tensor,
    child_ids: torch.Tensor,
    k: int,
    *,
    block_i: int | None = None,
    block_j: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same inputs and outputs as `dynamic.expand_frontier`, one kernel launch."""
    _check_device(scores, child_logp, child_ids)
    b, f, c = child_logp.shape
    if scores.shape != (b, f) or child_ids.shape != (b, f, c):
        raise ValueError(f"shape mismatch: scores {tuple(scores.shape)}, logp {tuple(child_logp.shape)}, ids {tuple(child_ids.shape)}")
    m = f * c
    kk = min(int(k), m)
    dev = scores.device
    out_dtype = torch.result_type(scores, child_logp)
    scores_c = scores.contiguous()
    logp_c = child_logp.contiguous()
    ids_c = child_ids.contiguous()
    cand = torch.empty(b, m, dtype=out_dtype, device=dev)
    cand_ids = torch.empty(b, m, dtype=child_ids.dtype, device=dev)
    nxt_s = torch.empty(b, kk, dtype=out_dtype, device=dev)
    nxt_id = torch.empty(b, kk, dtype=child_ids.dtype, device=dev)
    nxt_flat = torch.empty(b, kk, dtype=torch.long, device=dev)
    if b == 0 or m == 0:
        return cand, cand_ids, nxt_s, nxt_id, nxt_flat
    launch_expand(scores_c, logp_c, ids_c, kk, cand, cand_ids, nxt_s, nxt_id, nxt_flat, block_i=block_i, block_j=block_j)
    return cand, cand_ids, nxt_s, nxt_id, nxt_flat


def select_tree_triton(
    root: torch.Tensor,
    cand_scores: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_parents: torch.Tensor,
    cand_depths: torch.Tensor,
    total_tokens: int,
    max_depth: int,
    *,
    mask_dtype: torch.dtype = torch.bool,
    block_i: int | None = None,
    block_j: int | None = None,
) -> DraftTree:
    """Same inputs and outputs as `dynamic.select_tree` (+ `tree_from_parents`), one kernel launch.

    mask_dtype: torch.bool (as the reference) or an integer type (0/1).
    """
    _check_device(root, cand_scores, cand_ids, cand_parents, cand_depths)
    b, n = cand_scores.shape
    for name, t in (("cand_ids", cand_ids), ("cand_parents", cand_parents), ("cand_depths", cand_depths)):
        if t.shape != (b, n):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {(b, n)}")
    if root.shape != (b,):
        raise ValueError(f"root has shape {tuple(root.shape)}, expected {(b,)}")
    if total_tokens < 1:
        raise ValueError("total_tokens must be >= 1")
    t = min(int(total_tokens) - 1, n) + 1
    d = int(max_depth) + 1
    dev = cand_scores.device
    tokens = torch.empty(b, t, dtype=torch.promote_types(root.dtype, cand_ids.dtype), device=dev)
    parents = torch.empty(b, t, dtype=torch.long, device=dev)
    depths = torch.empty(b, t, dtype=torch.promote_types(root.dtype, cand_depths.dtype), device=dev)
    mask = torch.empty(b, t, t, dtype=mask_dtype, device=dev)
    retrieve = torch.empty(b, t, d, dtype=torch.long, device=dev)
    num_leaves = torch.empty(b, dtype=torch.long, device=dev)
    if b > 0:
        launch_finalize(root.contiguous(), cand_scores.contiguous(), cand_ids.contiguous(), cand_parents.contiguous(),
                        cand_depths.contiguous(), max_depth, tokens, parents, depths, mask, retrieve, num_leaves,
                        block_i=block_i, block_j=block_j)
    return DraftTree(tokens, parents, depths, mask, retrieve, num_leaves)


def greedy_accept_from_choice_triton(tree: DraftTree, choice: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`accept.greedy_accept` given choice = the target's argmax per column [B, T]."""
    _check_device(tree.tokens, choice)
    b, t = tree.tokens.shape
    d = tree.retrieve.shape[2]
    dev = choice.device
    path = torch.empty(b, d, dtype=torch.long, device=dev)
    count = torch.empty(b, dtype=tree.depths.dtype, device=dev)
    bonus = torch.empty(b, dtype=choice.dtype, device=dev)
    if b > 0:
        accept_kernel[(b,)](
            tree.tokens.contiguous(), tree.parents.contiguous(), tree.depths.contiguous(),
            tree.mask.contiguous(), choice.contiguous(), t, d, path, count, bonus,
            BLOCK_T=_p2(t), BLOCK_D=_p2(d, 2),
        )
    return path, count, bonus


def greedy_accept_triton(tree: DraftTree, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same as `accept.greedy_accept`: argmax in torch, the tree walk in one kernel."""
    return greedy_accept_from_choice_triton(tree, logits.argmax(-1))
