"""Verification: which drafted path the target accepts, and the bonus token after it.

Greedy (temperature 0): the longest root-to-node path whose every token is the target's argmax at
its parent; the bonus token is the argmax at the last accepted node. The output equals plain
greedy decoding token for token.

Sampling (temperature > 0) uses the same rule on Gumbel-perturbed log-probabilities, so that a
drafted child is accepted exactly when it is the token the target samples at its parent
(griffin_trt/runtime/sampling.py): lossless, and the same tokens for a seed whatever the tree.
"""
from __future__ import annotations

import torch

from .structure import DraftTree


def process_logits(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Target probabilities after temperature, then top-k, then top-p (float32, last axis).

    The row maximum is subtracted before dividing by the temperature, so any finite T > 0 is sound:
    the best logit maps to 0 (never 0/0 or inf/inf), the others to finite or -inf values, and a T
    so small that it underflows float32 samples among the tied best tokens, as greedy would pick them.
    """
    x = logits.float()
    x = x - x.amax(-1, keepdim=True)
    x = torch.where(x == 0, x, x / temperature)
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sx, si = torch.sort(x, dim=-1, descending=True)
        sp = torch.softmax(sx, dim=-1)
        # Drop a token when the tokens before it already reach top_p; the first always stays.
        drop = (sp.cumsum(-1) - sp) >= top_p
        x = x.masked_fill(drop.scatter(-1, si, drop), float("-inf"))
    return torch.softmax(x, dim=-1)


def _path_to(tree: DraftTree, node: torch.Tensor) -> torch.Tensor:
    """Columns of node's ancestors (root first) [B, max_depth + 1], padded with -1."""
    b, t = tree.tokens.shape
    d = tree.retrieve.shape[2]
    row = tree.mask.gather(1, node.view(b, 1, 1).expand(b, 1, t)).squeeze(1)
    level = torch.where(row, tree.depths, d)
    out = torch.full((b, d + 1), -1, dtype=torch.long, device=node.device)
    out.scatter_(1, level, torch.arange(t, device=node.device).expand(b, t))
    return out[:, :d]


def greedy_accept(tree: DraftTree, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [B, T, V] at the tree's columns -> (path [B, D+1] padded -1, accepted nodes [B], bonus [B]).

    The accepted node count includes the root, so a step emits (count - 1) drafted tokens + bonus.
    """
    choice = logits.argmax(-1)
    parent_choice = choice.gather(1, tree.parents.clamp(min=0))
    correct = (tree.tokens == parent_choice) | (tree.parents < 0)
    accepted = ~(tree.mask & ~correct[:, None, :]).any(-1)
    # Siblings carry distinct tokens, so at most one child of an accepted node is accepted: the
    # accepted set is a chain and its deepest node is unique.
    best = torch.where(accepted, tree.depths, -1).argmax(1)
    count = tree.depths.gather(1, best[:, None]).squeeze(1) + 1
    bonus = choice.gather(1, best[:, None]).squeeze(1)
    return _path_to(tree, best), count, bonus
