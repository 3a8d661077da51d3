"""Static draft trees given as choice paths (Medusa / EAGLE-1 style).

A path [r0, r1, ...] names the node reached by taking the root's rank-r0 drafted child, then that
node's rank-r1 child, and so on. The shape is fixed; only the tokens depend on the drafter.
"""
from __future__ import annotations

import torch

from .structure import DraftTree, tree_from_parents


class StaticTree:
    def __init__(self, choices: tuple[tuple[int, ...], ...]):
        paths = sorted(set(map(tuple, choices)), key=lambda p: (len(p), p))
        index = {p: i + 1 for i, p in enumerate(paths)}  # column 0 is the root
        self.paths = paths
        self.size = len(paths) + 1
        self.max_depth = max(len(p) for p in paths)
        self.parents = [-1] + [index[p[:-1]] if len(p) > 1 else 0 for p in paths]
        self.ranks = [0] + [p[-1] for p in paths]
        self.depths = [0] + [len(p) for p in paths]
        # Nodes grouped by depth; nodes of depth d are drafted from their parents' drafter outputs.
        self.levels = [[i for i, d in enumerate(self.depths) if d == level] for level in range(self.max_depth + 1)]
        self.max_rank = max(self.ranks) + 1

    def build(self, tokens: torch.Tensor) -> DraftTree:
        """tokens [B, size] with column 0 the root -> the tree's index tensors."""
        b = tokens.shape[0]
        dev = tokens.device
        parents = torch.tensor(self.parents, device=dev).expand(b, -1).contiguous()
        depths = torch.tensor(self.depths, device=dev).expand(b, -1).contiguous()
        return tree_from_parents(tokens, parents, depths, self.max_depth)
