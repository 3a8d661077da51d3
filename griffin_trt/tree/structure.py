"""The draft tree as the verifier sees it, and its derived index tensors."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class DraftTree:
    """A batch of trees with the same node count T (column 0 is the root: the last emitted token).

    Columns are in creation order, so every node's parent has a smaller column.
    - tokens [B, T] int64; parents [B, T] int64 (-1 for the root); depths [B, T] int64 (root 0)
    - mask [B, T, T] bool: row j attends to its ancestors and itself
    - retrieve [B, T, max_depth + 1] int64: one root-to-leaf row of columns per leaf, padded with -1;
      rows past num_leaves are all -1
    - num_leaves [B] int64
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    depths: torch.Tensor
    mask: torch.Tensor
    retrieve: torch.Tensor
    num_leaves: torch.Tensor

    @property
    def size(self) -> int:
        return self.tokens.shape[1]


def stable_topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k along the last axis; equal values keep index order (the lower index wins).

    Determinism on ties matters twice: kernels must reproduce the reference exactly, and a tree
    selection must never keep a child whose equal-scored parent was dropped.
    """
    vals, idx = torch.sort(x, dim=-1, descending=True, stable=True)
    return vals[..., :k], idx[..., :k]


def tree_from_parents(tokens: torch.Tensor, parents: torch.Tensor, depths: torch.Tensor, max_depth: int) -> DraftTree:
    """Derive mask, retrieve indices and leaf counts from parent pointers (parents precede children)."""
    b, t = parents.shape
    dev = parents.device
    cols = torch.arange(t, device=dev)
    mask = torch.zeros(b, t, t, dtype=torch.bool, device=dev)
    # Walk every node up to the root at once: max_depth pointer jumps.
    cur = cols.expand(b, t).clone()
    mask.scatter_(2, cur[..., None], True)
    for _ in range(max_depth):
        cur = torch.where(cur > 0, parents.gather(1, cur.clamp(min=0)), cur)
        mask.scatter_(2, cur.clamp(min=0)[..., None], True)
    # Count children (scatter_add): a plain scatter_ of `parents >= 0` writes the root's False and its
    # children's True to column 0, whose order is undefined on CUDA.
    n_children = torch.zeros(b, t, dtype=torch.long, device=dev)
    n_children.scatter_add_(1, parents.clamp(min=0), (parents >= 0).long())
    is_parent = n_children > 0
    is_leaf = ~is_parent
    num_leaves = is_leaf.sum(1)
    # Leaf rows first, in column order (stable sort of a 0/1 key).
    leaf_order = torch.sort((~is_leaf).to(torch.int8), dim=1, stable=True).indices
    leaf_mask = mask.gather(1, leaf_order[..., None].expand(b, t, t))  # [B, T(rows), T(cols)]
    retrieve = torch.full((b, t, max_depth + 1), -1, dtype=torch.long, device=dev)
    level = torch.where(leaf_mask, depths[:, None, :], max_depth + 1)  # ancestors' depth, else out of range
    src = cols.expand(b, t, t)
    padded = torch.full((b, t, max_depth + 2), -1, dtype=torch.long, device=dev)
    padded.scatter_(2, level, src)
    retrieve = padded[..., : max_depth + 1]
    rows = torch.arange(t, device=dev)[None, :, None]
    retrieve = torch.where(rows < num_leaves[:, None, None], retrieve, -1)
    return DraftTree(tokens, parents, depths, mask, retrieve, num_leaves)
