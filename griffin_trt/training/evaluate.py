"""Acceptance length (tau) of a written drafter, measured through the real decoding loop."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm


def measure_tau(target: Path, drafter: Path, prompts: list[list[int]], new_tokens: int, tree: tuple[int, int, int],
                device: str = "cpu", dtype: str = "float32", progress: bool = True) -> dict:
    """Greedy decoding of every prompt (batch 1) with the given dynamic tree; tau = tokens per target
    forward after prefill, the bonus token included (per request, then averaged)."""
    from ..recipe import recipe_from_dict
    from ..runtime import SamplingParams, load_runtime

    t0 = time.perf_counter()
    k, depth, total = tree
    recipe = recipe_from_dict({
        "model": {"target": str(target), "drafter": str(drafter), "dtype": dtype},
        "tree": {"top_k": k, "depth": depth, "total_tokens": total},
        "limits": {"max_batch": 1, "max_input_len": max(map(len, prompts)), "max_output_len": new_tokens},
        "build": {"backend": "torch", "device": device},
    }, base=Path.cwd())
    rt = load_runtime(recipe, backend="torch", device=device)
    taus, accepted, forwards, outputs = [], [0] * (depth + 1), 0, []
    for p in tqdm(prompts, desc="evaluation (tau)", unit="prompt", disable=not progress, dynamic_ncols=True):
        r = rt.decoder.generate([p], new_tokens, SamplingParams())[0]
        taus.append(r.acceptance_length)
        forwards += r.target_forwards
        for d, n in enumerate(r.accepted_per_position[: depth + 1]):
            accepted[d] += n
        outputs.append(r.token_ids)
    return {
        "tree": list(tree),
        "prompts": len(prompts),
        "new_tokens": new_tokens,
        "mean_tau": sum(taus) / len(taus),
        "min_tau": min(taus),
        "max_tau": max(taus),
        "accept_rate_by_depth": [a / forwards if forwards else 0.0 for a in accepted],
        "outputs": outputs,
        "seconds": time.perf_counter() - t0,
    }
