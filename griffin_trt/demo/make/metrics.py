"""What the demo pair is judged by: repetition in its greedy output, and what a target step costs."""
from __future__ import annotations

import statistics
import time

import torch


def distinct_ngram_ratio(ids: list[int], n: int = 4) -> float:
    """Distinct n-grams / n-grams in a token sequence (1.0: nothing repeats; loops drive it to 0)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


@torch.no_grad()
def _median_ms(target, t: int, context: int = 128, repeats: int = 21) -> float:
    cap = context + 64
    k, v = target.new_cache(1, cap)
    toks = torch.zeros(1, t, dtype=torch.long)
    pos = torch.arange(context, context + t)[None]
    mask = (torch.arange(cap)[None, None, :] <= pos[:, :, None]).expand(1, t, cap)
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        target(toks, pos, pos, mask, k, v)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def weight_traffic(target, tokens: tuple[int, ...] = (1, 8, 16, 60)) -> dict:
    """Median ms of the runtime's target forward over T new tokens (context 128), and the share of
    a one-token step that is weight traffic rather than per-op overhead: the overhead is measured
    on a copy shrunk to head size 16 (same layers, heads and ops; its weights stay in cache)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ...models.target import TargetModel

    c = target.config
    small = LlamaConfig(vocab_size=c.vocab_size, hidden_size=16 * c.num_attention_heads, intermediate_size=128, head_dim=16,
                        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                        num_key_value_heads=c.num_key_value_heads, max_position_embeddings=c.max_position_embeddings)
    shrunk = TargetModel(LlamaForCausalLM(small).eval().requires_grad_(False))
    steps = {t: _median_ms(target, t) for t in tokens}
    overhead = _median_ms(shrunk, 1)
    return {"step_ms_by_tokens": steps, "step_ms": steps[1], "overhead_ms": overhead,
            "weight_share": max(0.0, 1 - overhead / steps[1]),
            "weights_mb_fp32": sum(p.numel() for p in target.parameters()) * 4 / 1e6}
