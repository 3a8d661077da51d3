"""Sampling at temperature > 0 that does not depend on the batch, the tree or speculation.

Every output position i of a request gets its own Gumbel noise vector G_i, drawn from the request's
own seeded generator in position order (position i is always the i-th draw, whatever the steps
looked like). The token at position i is argmax_v(log p_i(v) + G_i(v)), with p_i the target's
processed distribution (temperature, top-k, top-p) after the tokens before it: the Gumbel-max trick,
so it is distributed exactly as p_i.

Verification then is greedy acceptance on these perturbed scores: a drafted child is accepted when
it is the token the target samples at its parent, and the bonus token is the target's sample after
the accepted path. The output is the target's own sample path for this seed, token for token, so a
seeded request gives the same tokens alone or in a crowd, under any tree budget, speculative or
plain. Acceptance is as likely as with multi-draft rejection sampling over deterministic drafts
(the chance that the target's sample is one of the drafted children is the sum of their p).
"""
from __future__ import annotations

import torch

from ..tree import process_logits
from .results import SamplingParams


class PositionNoise:
    """Gumbel noise per output position, drawn in position order from one seeded generator."""

    def __init__(self, seed: int, vocab: int, device: torch.device):
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.vocab = vocab
        self.device = device
        self.start = 0  # position of self.buf[0]
        self.buf: list[torch.Tensor] = []

    def window(self, start: int, n: int) -> torch.Tensor:
        """Noise for positions [start, start + n) as [n, V]; positions before `start` are dropped."""
        if start < self.start:
            raise ValueError(f"position {start} was already consumed (next is {self.start})")
        drop = min(start - self.start, len(self.buf))
        del self.buf[:drop]
        self.start += drop
        while self.start + len(self.buf) < start:  # skipped positions still consume their draw
            self._draw()
            self.buf.pop()
            self.start += 1
        while len(self.buf) < n:
            self.buf.append(self._draw())
        return torch.stack(self.buf[:n])

    def _draw(self) -> torch.Tensor:
        # One draw per position, always of V values: the sequence never depends on how many
        # positions a step asks for.
        u = torch.rand(self.vocab, generator=self.gen, device=self.device)
        return -torch.log(-torch.log(u.clamp(min=1e-20)))


def sampled_scores(logits: torch.Tensor, sp: SamplingParams, noise: torch.Tensor) -> torch.Tensor:
    """logits [T, V], noise [T, V] (the noise of each column's position) -> scores whose argmax is the sample."""
    logp = torch.log(process_logits(logits, sp.temperature, sp.top_p, sp.top_k))
    return logp + noise
