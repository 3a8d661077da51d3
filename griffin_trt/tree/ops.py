"""The three tree operations the decoding loop needs, bundled so an executor can supply its own.

`expand` has the signature of `dynamic.expand_frontier`, `select` of `dynamic.select_tree`,
`greedy_accept` of `accept.greedy_accept`. Every implementation gives identical outputs (the kernels
are tested bit-exact against the reference), so the choice never changes a token.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .accept import greedy_accept
from .dynamic import expand_frontier, select_tree


@dataclass(frozen=True)
class TreeOps:
    name: str  # what runs them, for logs and stats: "torch", "triton", "tensorrt-plugin"
    expand: Callable
    select: Callable
    greedy_accept: Callable


REFERENCE = TreeOps("torch", expand_frontier, select_tree, greedy_accept)


def default_tree_ops(device: torch.device) -> TreeOps:
    """OpenAI-Triton kernels on CUDA (where triton imports), the torch reference elsewhere."""
    if device.type == "cuda":
        try:
            from .kernels import expand_frontier_triton, greedy_accept_triton, select_tree_triton
        except ImportError:  # no OpenAI Triton on this host
            return REFERENCE
        return TreeOps("triton", expand_frontier_triton, select_tree_triton, greedy_accept_triton)
    return REFERENCE
