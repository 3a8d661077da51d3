"""Self-distillation data: the target continues each prompt; we keep its tokens and features.

The drafter learns what the target does, on text the target writes (EAGLE/HASS/GRIFFIN recommend
the target's own outputs over a fixed dataset's). Per sequence: prompt + continuation (up to an
end token), the target's final-norm hidden state at every position, and the loss mask
(continuation positions; prompt positions too with --prompt-loss). Target distributions are not
stored: the training loop recomputes them from the features with the target's LM head.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .shards import shard_path, write_shard

FEATURE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@torch.no_grad()
def continue_prompts(hf, prompts: list[list[int]], new_tokens: int, temperature: float, stop_ids: list[int],
                     pad_id: int, device) -> list[list[int]]:
    """The target's continuations (stop token included when reached), left-padded batch generation."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        attn[b, width - len(p) :] = 1
    from transformers import GenerationConfig

    sample = temperature > 0
    # A fresh generation config: the checkpoint's own (sampling defaults, max_length) must not leak in.
    sampling = dict(temperature=temperature, top_p=1.0, top_k=0) if sample else {}
    gen = GenerationConfig(max_new_tokens=new_tokens, do_sample=sample, eos_token_id=stop_ids or None,
                           pad_token_id=pad_id, **sampling)
    out = hf.generate(ids.to(device), attention_mask=attn.to(device), generation_config=gen)[:, width:].tolist()
    stops = set(stop_ids)
    result = []
    for row in out:
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        result.append(row[:cut])
    return result


@torch.no_grad()
def final_features(hf, seqs: torch.Tensor) -> torch.Tensor:
    """Final-norm hidden states of right-padded sequences (causal: pads never reach real positions)."""
    return hf.model(input_ids=seqs).last_hidden_state


def make_shard(hf, prompts: list[list[int]], cfg, stop_ids: list[int], pad_id: int, device, seed: int) -> dict:
    seq_len = cfg.prompt_tokens + cfg.new_tokens
    n = len(prompts)
    tokens = torch.full((n, seq_len), pad_id, dtype=torch.int32)
    mask = torch.zeros(n, seq_len, dtype=torch.uint8)
    lengths = torch.zeros(n, dtype=torch.int32)
    feats = None
    for lo in range(0, n, cfg.gen_batch):
        batch = prompts[lo : lo + cfg.gen_batch]
        torch.manual_seed(seed + lo)  # sampling only; greedy ignores it
        conts = continue_prompts(hf, batch, cfg.new_tokens, cfg.temperature, stop_ids, pad_id, device)
        seqs = torch.full((len(batch), seq_len), pad_id, dtype=torch.long)
        for b, (p, c) in enumerate(zip(batch, conts)):
            row = lo + b
            full = (p + c)[:seq_len]
            seqs[b, : len(full)] = torch.tensor(full)
            lengths[row] = len(full)
            first = 1 if cfg.prompt_loss else len(p)
            mask[row, first : len(full)] = 1
        h = final_features(hf, seqs.to(device)).to("cpu", FEATURE_DTYPES[cfg.feature_dtype])
        if feats is None:
            feats = torch.zeros(n, seq_len, h.shape[-1], dtype=h.dtype)
        feats[lo : lo + len(batch)] = h
        tokens[lo : lo + len(batch)] = seqs.to(torch.int32)
    return {"tokens": tokens, "mask": mask, "lengths": lengths, "features": feats}


def generate_data(hf, prompts: list[list[int]], cfg, folder, stop_ids: list[int], pad_id: int, device) -> int:
    """Write the shards that are missing (a rerun after a kill resumes here); returns the shard count."""
    size = cfg.shard_size
    count = (len(prompts) + size - 1) // size
    todo = [i for i in range(count) if not shard_path(folder, i).is_file()]
    bar = tqdm(total=len(prompts), initial=(count - len(todo)) * size if todo else len(prompts),
               desc="self-distillation", unit="prompt", disable=cfg.quiet, dynamic_ncols=True)
    for i in todo:
        chunk = prompts[i * size : (i + 1) * size]
        t0 = time.perf_counter()
        write_shard(folder, i, make_shard(hf, chunk, cfg, stop_ids, pad_id, device, cfg.seed * 1_000_003 + i * 7919))
        record_shard_seconds(folder, i, time.perf_counter() - t0)
        bar.update(len(chunk))
    bar.close()
    return count


TIMING = "timing.json"


def record_shard_seconds(folder, i: int, seconds: float) -> None:
    """Wall time per shard, kept across resumed runs (the data phase's time is their sum)."""
    path = Path(folder) / TIMING
    times = shard_seconds(folder)
    times[str(i)] = round(seconds, 1)
    tmp = path.with_name(TIMING + ".tmp")
    tmp.write_text(json.dumps(times, indent=1) + "\n")
    os.replace(tmp, path)


def shard_seconds(folder) -> dict[str, float]:
    path = Path(folder) / TIMING
    return json.loads(path.read_text()) if path.is_file() else {}
