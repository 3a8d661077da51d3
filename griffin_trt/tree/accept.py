"""Verification: which drafted path the target accepts, and the bonus token after it.

Greedy (temperature 0): the longest root-to-node path whose every token is the target's argmax at
its parent; the bonus token is the argmax at the last accepted node. The output equals plain
greedy decoding token for token.

Sampling (temperature > 0): multi-draft rejection sampling with deterministic drafts. At the
current node, with p the target's processed distribution there, try the children in column order:
accept child x with probability p(x); on rejection set p(x) = 0 and renormalise. If every child is
rejected, the bonus token is sampled from what is left. Each emitted token is distributed exactly
as p (P(x_i) = prod_(j<i)(1 - p'(x_j)) * p'(x_i) = p(x_i)), so the output follows the target.
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


def _uniform(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand((), generator=generator, device=device)


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


def sample_accept(
    tree: DraftTree,
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    top_k: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lossless rejection sampling over the tree; same outputs as `greedy_accept`."""
    b = tree.tokens.shape[0]
    parents = tree.parents.tolist()
    tokens = tree.tokens.tolist()
    dev = logits.device
    best, bonus = [], []
    for r in range(b):
        children: dict[int, list[int]] = {}
        for j, p in enumerate(parents[r]):
            if p >= 0:
                children.setdefault(p, []).append(j)
        node = 0
        while True:
            p = process_logits(logits[r, node], temperature, top_p, top_k)
            nxt = None
            for c in children.get(node, ()):
                x = tokens[r][c]
                if _uniform(generator, dev) < p[x]:
                    nxt = c
                    break
                p[x] = 0.0
                total = p.sum()
                if total <= 0:  # every remaining token was rejected: only rounding can get here
                    break
                p = p / total
            if nxt is None:
                if p.sum() <= 0:
                    p = process_logits(logits[r, node], temperature, top_p, top_k)
                bonus.append(int(torch.multinomial(p, 1, generator=generator)))
                best.append(node)
                break
            node = nxt
    best_t = torch.tensor(best, device=tree.tokens.device)
    count = tree.depths.gather(1, best_t[:, None]).squeeze(1) + 1
    return _path_to(tree, best_t), count, torch.tensor(bonus, device=tree.tokens.device)
