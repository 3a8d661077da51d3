"""EAGLE-2's dynamic draft tree, as GRIFFIN drafts it.

From the root, each drafter pass expands every frontier node into its top-k children, scores each
child by cumulative log-probability (parent score + child log-prob) and keeps the global top-k as
the next frontier. Every child ever scored is a candidate; at the end the best `total_tokens - 1`
candidates plus the root form the tree that the target verifies.

Candidate numbering (creation order): the root's k children are 0..k-1; pass i (0-based) adds
k*k candidates at k + i*k*k + f*k + c for frontier slot f and child rank c.
"""
from __future__ import annotations

import torch

from .structure import DraftTree, stable_topk, tree_from_parents


def expand_frontier(
    scores: torch.Tensor, child_logp: torch.Tensor, child_ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tree step. scores [B, F]; child_logp/child_ids [B, F, C] (each node's top-C children).

    Returns (cand_scores [B, F*C], cand_ids [B, F*C], next_scores [B, k], next_ids [B, k],
    next_flat [B, k]): all children as candidates, and the next frontier as flat candidate indices
    (parent frontier slot = next_flat // C).
    """
    b, f, c = child_logp.shape
    # log-probs are <= 0 mathematically; clamping keeps a child's score <= its parent's under any
    # rounding, which `select_tree` relies on to keep every kept node's parent.
    cand = (scores[:, :, None] + child_logp.clamp(max=0.0)).reshape(b, f * c)
    ids = child_ids.reshape(b, f * c)
    next_scores, next_flat = stable_topk(cand, k)
    return cand, ids, next_scores, ids.gather(1, next_flat), next_flat


def select_tree(
    root: torch.Tensor,
    cand_scores: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_parents: torch.Tensor,
    cand_depths: torch.Tensor,
    total_tokens: int,
    max_depth: int,
) -> DraftTree:
    """Keep the best `total_tokens - 1` candidates (ties: earlier candidate wins) plus the root.

    root [B]; cand_* [B, N] with cand_parents the parent's candidate index (-1: the root).
    A child never outscores its parent and loses ties to it, so every kept node's parent is kept.
    """
    n = total_tokens - 1
    _, keep = stable_topk(cand_scores, n)
    keep = torch.sort(keep, dim=1).values  # creation order: ancestors before descendants
    tokens = torch.cat([root[:, None], cand_ids.gather(1, keep)], dim=1)
    par_cand = cand_parents.gather(1, keep)
    # Parent candidate -> its column (position in `keep` + 1); the root's children point at column 0.
    par_col = torch.searchsorted(keep, par_cand.clamp(min=0)) + 1
    parents = torch.where(par_cand < 0, torch.zeros_like(par_col), par_col)
    parents = torch.cat([torch.full_like(root[:, None], -1), parents], dim=1)
    depths = torch.cat([torch.zeros_like(root[:, None]), cand_depths.gather(1, keep)], dim=1)
    return tree_from_parents(tokens, parents, depths, max_depth)
