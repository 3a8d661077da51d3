"""Executor running the PyTorch modules directly (CPU, or CUDA where available)."""
from __future__ import annotations

from pathlib import Path

import torch

from ...models import ModelPair, load_pair
from ...models.target import TORCH_DTYPES
from .base import Executor, ExecutorSpec


class TorchExecutor(Executor):
    def __init__(self, pair: ModelPair, target_kv_len: int, drafter_kv_len: int, max_batch: int):
        self.pair = pair
        t = pair.target
        device = t.lm_head.weight.device
        self.spec = ExecutorSpec(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            top_k=pair.draft_step.top_k,
            target_kv_len=target_kv_len,
            drafter_kv_len=drafter_kv_len,
            max_batch=max_batch,
            device=device,
            feature_dtype=t.dtype,
        )
        # Caches are allocated once at full capacity; `reset` only narrows the batch view.
        self._tk, self._tv = t.new_cache(max_batch, target_kv_len)
        self._dk, self._dv = pair.drafter.new_cache(max_batch, drafter_kv_len)
        self.reset(1)

    @classmethod
    def from_paths(
        cls,
        target: str | Path,
        drafter: str | Path,
        top_k: int,
        target_kv_len: int,
        drafter_kv_len: int,
        max_batch: int = 1,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> "TorchExecutor":
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {list(TORCH_DTYPES)}")
        pair = load_pair(target, drafter, top_k=top_k, dtype=dtype, device=device)
        return cls(pair, target_kv_len, drafter_kv_len, max_batch)

    def reset(self, batch: int) -> None:
        if not 1 <= batch <= self.spec.max_batch:
            raise ValueError(f"batch {batch} is outside [1, max_batch={self.spec.max_batch}]")
        self.batch = batch
        self.tk, self.tv = self._tk[:, :batch], self._tv[:, :batch]
        self.dk, self.dv = self._dk[:batch], self._dv[:batch]

    @torch.inference_mode()
    def target_step(self, tokens, positions, write_index, mask):
        logits, hidden, _, _ = self.pair.target(tokens, positions, write_index, mask, self.tk, self.tv)
        return logits, hidden

    @torch.inference_mode()
    def draft_step(self, features, tokens, positions, write_index, mask):
        vals, ids, regress, _, _ = self.pair.draft_step(
            features, tokens, positions, write_index, mask, self.dk, self.dv
        )
        return vals, ids, regress

    @torch.inference_mode()
    def move_target_kv(self, src, dst):
        for cache in (self.tk, self.tv):
            for j in range(src.shape[1]):
                idx_s = src[:, j].view(1, -1, 1, 1, 1).expand(cache.shape[0], -1, cache.shape[2], 1, cache.shape[4])
                idx_d = dst[:, j].view(1, -1, 1, 1, 1).expand_as(idx_s)
                cache.scatter_(3, idx_d, cache.gather(3, idx_s))
