"""Executor running the PyTorch modules directly (CPU, or CUDA where available)."""
from __future__ import annotations

from pathlib import Path

import torch

from ...models import ModelPair, load_pair
from ...models.target import TORCH_DTYPES
from .base import Executor, ExecutorSpec, move_cache_slots_


class CudaGraphed:
    """Replays a step as a CUDA graph, captured once per input shape.

    Decode-time steps have few distinct shapes (a draft pass, the drafter update, the tree verify,
    one plain token, per batch bucket and tree budget) and are launch-bound at small batch, which is
    what graphs remove. Inputs are copied into static buffers; the caches are captured by address
    (they never move), so in-place cache writes land where the next step reads them. The cache rows
    a step runs on are part of the key (`rows()`: a graph captured on rows [0, 4) must not replay on
    [2, 3)). Decode steps run on rows [0, B); a step on rows starting elsewhere (a newcomer's
    prefill) and shapes above `max_tokens` (long prefills) run eagerly.
    """

    def __init__(self, fn, max_tokens: int, rows):
        self.fn = fn
        self.max_tokens = max_tokens
        self.rows = rows
        self.graphs: dict = {}

    def __call__(self, *args: torch.Tensor):
        rows = self.rows()
        if args[1].shape[1] > self.max_tokens or rows[0] != 0:  # args[1]: tokens [B, T] for both steps
            return self.fn(*args)
        key = (rows, *(a.shape for a in args))
        entry = self.graphs.get(key)
        if entry is None:
            static_in = [a.clone() for a in args]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside capture (allocator, cuBLAS handles)
                self.fn(*static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.fn(*static_in)
            entry = self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = entry
        for buf, a in zip(static_in, args):
            buf.copy_(a)
        graph.replay()
        return tuple(o.clone() for o in static_out)  # the next replay overwrites the static outputs


class TorchExecutor(Executor):
    def __init__(
        self, pair: ModelPair, target_kv_len: int, drafter_kv_len: int, max_batch: int, cuda_graphs: bool = True
    ):
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
        # Caches are allocated once at full capacity; `select_rows` / `reset` only narrow the view.
        self._tk, self._tv = t.new_cache(max_batch, target_kv_len)
        self._dk, self._dv = pair.drafter.new_cache(max_batch, drafter_kv_len)
        self._target, self._draft = self._eager_target, self._eager_draft
        if cuda_graphs and device.type == "cuda":
            # Anything up to a tree (or a frontier) is a decode-time shape worth a graph.
            pair.target.use_static_experts()
            rows = lambda: self.rows  # noqa: E731
            self._target = CudaGraphed(self._eager_target, max_tokens=256, rows=rows)
            self._draft = CudaGraphed(self._eager_draft, max_tokens=256, rows=rows)
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
        cuda_graphs: bool = True,
        draft_vocab: int | None = None,
        token_counts: str | Path | None = None,
    ) -> "TorchExecutor":
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {list(TORCH_DTYPES)}")
        pair = load_pair(target, drafter, top_k=top_k, dtype=dtype, device=device, draft_vocab=draft_vocab,
                         token_counts=token_counts)
        return cls(pair, target_kv_len, drafter_kv_len, max_batch, cuda_graphs)

    def reset(self, batch: int) -> None:
        if not 1 <= batch <= self.spec.max_batch:
            raise ValueError(f"batch {batch} is outside [1, max_batch={self.spec.max_batch}]")
        self.select_rows(0, batch)

    def select_rows(self, lo: int, hi: int) -> None:
        if not 0 <= lo < hi <= self.spec.max_batch:
            raise ValueError(f"cache rows [{lo}, {hi}) are outside [0, max_batch={self.spec.max_batch})")
        self.rows = (lo, hi)
        self.batch = hi - lo
        self.tk, self.tv = self._tk[:, lo:hi], self._tv[:, lo:hi]
        self.dk, self.dv = self._dk[lo:hi], self._dv[lo:hi]

    @torch.inference_mode()
    def move_rows(self, src: int, dst: int) -> None:
        m = self.spec.max_batch
        if not (0 <= src < m and 0 <= dst < m):
            raise ValueError(f"rows {src} -> {dst}: both must be in [0, max_batch={m})")
        if src != dst:
            for c in (self._tk, self._tv):
                c[:, dst].copy_(c[:, src])
            for c in (self._dk, self._dv):
                c[dst].copy_(c[src])

    # The caches are read from self (views of fixed storage), so a captured graph keeps using them.
    def _eager_target(self, tokens, positions, write_index, mask, logit_index=None):
        logits, hidden, _, _ = self.pair.target(tokens, positions, write_index, mask, self.tk, self.tv, logit_index)
        return logits, hidden

    def _eager_draft(self, features, tokens, positions, write_index, mask):
        vals, ids, regress, _, _ = self.pair.draft_step(features, tokens, positions, write_index, mask, self.dk, self.dv)
        return vals, ids, regress

    @torch.inference_mode()
    def target_step(self, tokens, positions, write_index, mask, logit_index=None):
        if logit_index is None:
            return self._target(tokens, positions, write_index, mask)
        return self._target(tokens, positions, write_index, mask, logit_index)

    @torch.inference_mode()
    def draft_step(self, features, tokens, positions, write_index, mask):
        return self._draft(features, tokens, positions, write_index, mask)

    @torch.inference_mode()
    def move_target_kv(self, src, dst):
        move_cache_slots_((self.tk, self.tv), src, dst, slot_dim=3, batch_dim=1)
