"""The executor interface: three model calls over preallocated caches with static shapes.

All tensors are torch tensors on `spec.device` (an executor over another runtime converts at its
boundary). Shapes: B = batch rows (fixed by `reset`), T = new tokens this call, S = cache capacity.

- `target_step`: the target over T tokens (prefill: the padded prompt; verify: the draft tree;
  plain decoding: one token). Writes K/V at `write_index` and attends through `mask`.
- `draft_step`: one drafter pass with the LM head and top-k inside.
- `move_target_kv`: after verification, copy the accepted tree entries to their final slots.

Caches hold `max_batch` rows (slots). `reset(b)` starts a new batch on rows [0, b); an in-flight
scheduler instead keeps each row's cache across steps and picks the rows a step runs on with
`select_rows(lo, hi)` (a contiguous range, B = hi - lo), and packs rows with `move_rows`.
`tree_ops()` says which implementation of the draft-tree operations goes with this executor.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ...tree.ops import TreeOps, default_tree_ops


@dataclass(frozen=True)
class ExecutorSpec:
    vocab_size: int
    hidden_size: int
    top_k: int
    target_kv_len: int  # S for target masks/write slots
    drafter_kv_len: int  # S for drafter masks/write slots
    max_batch: int
    device: torch.device
    feature_dtype: torch.dtype  # dtype of the features passed from target_step to draft_step


class Executor(ABC):
    spec: ExecutorSpec

    @abstractmethod
    def reset(self, batch: int) -> None:
        """Start a new batch of `batch` rows (<= spec.max_batch); cache contents become irrelevant."""

    def select_rows(self, lo: int, hi: int) -> None:
        """Run the following steps on cache rows [lo, hi) (0 <= lo < hi <= spec.max_batch, B = hi - lo).

        Unlike `reset`, every row's cache contents are kept: a row admitted later (prefilled on its
        own range) and rows already decoding can then step together on one range.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot select cache rows")

    def move_rows(self, src: int, dst: int) -> None:
        """Copy row `src`'s whole target and drafter caches onto row `dst` (packing active rows)."""
        raise NotImplementedError(f"{type(self).__name__} cannot move cache rows")

    def tree_ops(self) -> TreeOps:
        """The draft-tree operations that run next to this executor's models (default: by device)."""
        return default_tree_ops(self.spec.device)

    @abstractmethod
    def target_step(
        self, tokens: torch.Tensor, positions: torch.Tensor, write_index: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens/positions/write_index int64 [B, T]; mask bool [B, T, target_kv_len].

        Returns logits float32 [B, T, V] and final-norm hidden states [B, T, H].
        """

    @abstractmethod
    def draft_step(
        self,
        features: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        write_index: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features [B, T, H]; tokens/positions/write_index int64 [B, T]; mask bool [B, T, drafter_kv_len].

        Returns top-k log-probabilities float32 [B, T, k], their token ids int64 [B, T, k] (best
        first) and regressed features [B, T, H].
        """

    @abstractmethod
    def move_target_kv(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """For every row b and column j copy target cache slot src[b, j] to dst[b, j] (all layers).

        int64 [B, A]; columns are applied in order, and src[b, j] >= dst[b, j] (entries only move
        towards the front, so copying in order never overwrites a source still to be read).
        """


def move_cache_slots_(caches, src: torch.Tensor, dst: torch.Tensor, slot_dim: int, batch_dim: int) -> None:
    """Copy slot src[b, j] to dst[b, j] in every cache, column by column (see Executor.move_target_kv)."""
    for cache in caches:
        for j in range(src.shape[1]):
            shape = [1] * cache.dim()
            shape[batch_dim] = -1
            expand = list(cache.shape)
            expand[slot_dim] = 1
            idx_s = src[:, j].view(shape).expand(expand)
            idx_d = dst[:, j].view(shape).expand(expand)
            cache.scatter_(slot_dim, idx_d, cache.gather(slot_dim, idx_s))


class KVBuffers:
    """K and V caches at full capacity, viewed for the current batch.

    An engine that writes its cache outputs into its cache inputs (in place) needs one pair; a graph
    that returns new caches is double-buffered: one pair is read, the other written, then swapped.
    """

    def __init__(self, shape_of, dtype: torch.dtype, max_batch: int, device: torch.device, in_place: bool = False):
        self.shape_of = shape_of  # batch -> shape
        self.in_place = in_place
        n = 1
        for s in shape_of(max_batch):
            n *= s
        # Zero-filled once: masked slots must hold finite values (0 x NaN would poison attention).
        self._flat = [torch.zeros(n, dtype=dtype, device=device) for _ in range(2 if in_place else 4)]
        self.view(1)

    def view(self, batch: int) -> None:
        shape = self.shape_of(batch)
        n = 1
        for s in shape:
            n *= s
        self.bufs = [f[:n].view(shape) for f in self._flat]  # k, v (current) [and k, v (next)]
        self.cur = 0

    @property
    def k(self) -> torch.Tensor:
        return self.bufs[2 * self.cur]

    @property
    def v(self) -> torch.Tensor:
        return self.bufs[2 * self.cur + 1]

    @property
    def next_k(self) -> torch.Tensor:
        return self.k if self.in_place else self.bufs[2 * (1 - self.cur)]

    @property
    def next_v(self) -> torch.Tensor:
        return self.v if self.in_place else self.bufs[2 * (1 - self.cur) + 1]

    def swap(self) -> None:
        if not self.in_place:
            self.cur = 1 - self.cur


class BufferedExecutor(Executor):
    """An executor over exported graphs or engines whose caches live in KVBuffers `_tc` (target)
    and `_dc` (drafter); `reset` narrows both to the batch."""

    _tc: KVBuffers
    _dc: KVBuffers

    def reset(self, batch: int) -> None:
        if not 1 <= batch <= self.spec.max_batch:
            raise ValueError(f"batch {batch} is outside [1, max_batch={self.spec.max_batch}]")
        self.batch = batch
        self._tc.view(batch)
        self._dc.view(batch)

    def _check_batch(self, b: int) -> None:
        if b != self.batch:
            raise ValueError(f"got {b} rows but the executor was reset for {self.batch}")
