"""Multi-pass drafting over whole training sequences, with the drafter's inference-time attention.

Pass 1 sees the target's features h_t (with token x_(t+1)); pass j >= 2 at position t sees the
feature pass j-1 regressed at t-1, i.e. the chain drafted from the last real feature at t-j+1.
All passes write their keys/values into one cache of `passes x T` slots and attend through
`pass_masks`, so pass j at t sees exactly what the drafter's cache holds at inference after
drafting j-1 tokens from position t-j+1.
"""
from __future__ import annotations

import torch


def pass_masks(T: int, passes: int, device=None) -> list[torch.Tensor]:
    """Boolean masks [T, passes*T], one per pass. Slot block k holds pass k+1's keys.

    Pass j at position t continues the chain whose last real feature is at s = t-j+1: it sees
    pass-1 slots 0..s, then one slot of each later pass k (2..j): position s+k-1.
    """
    t = torch.arange(T, device=device)[:, None]
    u = torch.arange(T, device=device)[None, :]
    out = []
    for j in range(1, passes + 1):
        m = torch.zeros(T, passes * T, dtype=torch.bool, device=device)
        m[:, :T] = u <= t - j + 1
        for k in range(2, j + 1):
            m[:, (k - 1) * T : k * T] = u == t - j + k
        out.append(m)
    return out


def run_passes(drafter, lm_head, feats: torch.Tensor, tokens: torch.Tensor, passes: int, noise: torch.Tensor | None,
               cache_dtype: torch.dtype):
    """Yields (draft logits [B, T, V], regressed features [B, T, H]) for passes 1..`passes`.

    feats: [B, T, H] target features h_0..h_(T-1); tokens: [B, T] the tokens x_1..x_T that follow
    them. `noise` is added to pass 1's input features (GRIFFIN's augmentation). Fed-back features
    are detached between passes, as in GRIFFIN's training.
    """
    B, T, _ = feats.shape
    pos = torch.arange(T, device=feats.device).expand(B, T)
    k_cache, v_cache = drafter.new_cache(B, passes * T, device=feats.device, dtype=cache_dtype)
    masks = pass_masks(T, passes, feats.device)
    x = feats + noise if noise is not None else feats
    for j in range(1, passes + 1):
        hidden, regress, k_cache, v_cache = drafter(
            x, tokens, pos, pos + (j - 1) * T, masks[j - 1].expand(B, -1, -1), k_cache, v_cache
        )
        yield lm_head(hidden), regress
        x = torch.cat((feats[:, :1], regress[:, :-1].detach()), dim=1)
