"""Draft trees: the dynamic EAGLE-2 tree GRIFFIN drafts with, static choice trees, acceptance.

`reference` functions are plain torch (batched, static shapes); `kernels` holds the same ops as
OpenAI-Triton kernels, tested against these.
"""
from .accept import greedy_accept, process_logits
from .dynamic import expand_frontier, select_tree
from .ops import REFERENCE, TreeOps, default_tree_ops
from .static import StaticTree
from .structure import DraftTree, stable_topk, tree_from_parents

__all__ = [
    "REFERENCE",
    "DraftTree",
    "TreeOps",
    "default_tree_ops",
    "StaticTree",
    "expand_frontier",
    "greedy_accept",
    "process_logits",
    "select_tree",
    "stable_topk",
    "tree_from_parents",
]
