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
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        write_index: torch.Tensor,
        mask: torch.Tensor,
        logit_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens/positions/write_index int64 [B, T]; mask bool [B, T, target_kv_len].

        Returns logits float32 [B, T, V] — or [B, R, V] for the R token columns `logit_index`
        int64 [B, R] names (prefill reads only each prompt's last token) — and final-norm hidden
        states [B, T, H]. Every row's write_index is one contiguous run start .. start + T - 1.
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
    """Copy slot src[b, j] to dst[b, j] in every cache (see Executor.move_target_kv).

    All sources are read before any destination is written, in one gather and one scatter per cache:
    the same result as copying column by column, since src[b, j] >= dst[b, j] > dst[b, i] for i < j
    (no source is a slot an earlier column writes).
    """
    for cache in caches:
        shape = [1] * cache.dim()
        shape[batch_dim], shape[slot_dim] = src.shape[0], src.shape[1]
        expand = list(cache.shape)
        expand[slot_dim] = src.shape[1]
        cache.scatter_(slot_dim, dst.view(shape).expand(expand), cache.gather(slot_dim, src.view(shape).expand(expand)))


def check_contiguous_writes(write_index: torch.Tensor) -> None:
    """The in-place graphs write row b's T new entries at slots write_index[b, 0] + 0..T-1 (one
    TensorScatter run per row): refuse anything else rather than write the wrong slots."""
    t = write_index.shape[1]
    if t > 1 and not torch.equal(write_index, write_index[:, :1] + torch.arange(t, device=write_index.device)):
        raise ValueError(
            "write_index rows must be contiguous runs (start, start + 1, ..., start + T - 1) for graphs with "
            f"in-place KV caches; got {write_index.tolist()}"
        )


class LayerCaches:
    """The inplace flavour's caches (builders/kv_layout.py): one buffer per (layer, K|V) of shape
    [max_batch, KVH, S, D], bound to a graph's cache input AND its output, so the graph updates it in
    place. Allocated once; a row range [lo, hi) is a slice of the leading batch axis, contiguous, so it
    is bound by pointer (no copy) and every range keeps fixed addresses."""

    supports_rows = True

    def __init__(self, pairs, row_shape, dtype: torch.dtype, max_batch: int, device: torch.device):
        self.pairs = list(pairs)  # [(input name, output name)], k then v per layer
        # Zero-filled once: masked slots must hold finite values (0 x NaN would poison attention).
        self.full = [torch.zeros((max_batch, *row_shape), dtype=dtype, device=device) for _ in self.pairs]
        self.select(0, 1)

    def select(self, lo: int, hi: int) -> None:
        self.views = [f[lo:hi] for f in self.full]

    def inputs(self) -> dict[str, torch.Tensor]:
        return {i: v for (i, _), v in zip(self.pairs, self.views)}

    def outputs(self) -> dict[str, torch.Tensor]:
        return {o: v for (_, o), v in zip(self.pairs, self.views)}  # the very same buffers

    def after_call(self) -> None:
        pass

    def move_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        move_cache_slots_(self.views, src, dst, slot_dim=2, batch_dim=0)

    def move_row(self, src: int, dst: int) -> None:
        for f in self.full:
            f[dst].copy_(f[src])

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self.full)


class StackedCaches:
    """The copy flavour's caches: `k_cache`/`v_cache` whole tensors ([L, B, KVH, S, D] for the target,
    [B, KVH, S, D] for the drafter) that the graph returns whole as `k_cache_out`/`v_cache_out`. Two
    pairs: one is read, the other written, then they swap. A batch of b rows is packed at the start of
    the storage, so changing b re-lays the rows out: contents survive only until the next `select`,
    and row ranges other than [0, b) are refused (`supports_rows`)."""

    supports_rows = False

    def __init__(self, shape_of, dtype: torch.dtype, max_batch: int, device: torch.device, batch_dim: int):
        self.shape_of = shape_of  # batch -> shape
        self.batch_dim = batch_dim
        n = 1
        for s in shape_of(max_batch):
            n *= s
        # Zero-filled once: masked slots must hold finite values (0 x NaN would poison attention).
        self._flat = [torch.zeros(n, dtype=dtype, device=device) for _ in range(4)]
        self.select(0, 1)

    def select(self, lo: int, hi: int) -> None:
        if lo != 0:
            raise NotImplementedError("copy-flavour caches hold rows [0, b) only")
        shape = self.shape_of(hi)
        n = 1
        for s in shape:
            n *= s
        self.bufs = [f[:n].view(shape) for f in self._flat]  # k, v (current), k, v (next)
        self.cur = 0

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"k_cache": self.bufs[2 * self.cur], "v_cache": self.bufs[2 * self.cur + 1]}

    def outputs(self) -> dict[str, torch.Tensor]:
        nxt = 1 - self.cur
        return {"k_cache_out": self.bufs[2 * nxt], "v_cache_out": self.bufs[2 * nxt + 1]}

    def after_call(self) -> None:
        self.cur = 1 - self.cur

    def move_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        k, v = self.inputs().values()
        move_cache_slots_((k, v), src, dst, slot_dim=self.batch_dim + 2, batch_dim=self.batch_dim)

    def move_row(self, src: int, dst: int) -> None:
        raise NotImplementedError("copy-flavour caches cannot move rows")

    @property
    def nbytes(self) -> int:
        return sum(f.numel() * f.element_size() for f in self._flat)


ROWS_NEED_INPLACE = (
    "this build's graphs/engines have copy-flavour KV caches ([layers, batch, ...] returned whole), whose rows "
    "cannot be selected or moved; rebuild with in-place KV caches (the default for onnxruntime and for "
    "TensorRT >= 10.15: `griffin-trt build --kv-flavour inplace`) or run whole batches with reset()"
)


class CacheExecutor(Executor):
    """An executor over exported graphs or engines whose caches live in `_tc` (target) and `_dc`
    (drafter), LayerCaches or StackedCaches; the row bookkeeping is shared here."""

    _tc: LayerCaches | StackedCaches
    _dc: LayerCaches | StackedCaches
    verify_writes = True  # refuse a write_index that is not one contiguous run per row (in-place caches)

    def reset(self, batch: int) -> None:
        if not 1 <= batch <= self.spec.max_batch:
            raise ValueError(f"batch {batch} is outside [1, max_batch={self.spec.max_batch}]")
        self._select(0, batch)

    def select_rows(self, lo: int, hi: int) -> None:
        if not 0 <= lo < hi <= self.spec.max_batch:
            raise ValueError(f"row range [{lo}, {hi}) is outside [0, max_batch={self.spec.max_batch})")
        if not (self._tc.supports_rows and self._dc.supports_rows):
            raise NotImplementedError(ROWS_NEED_INPLACE)
        self._select(lo, hi)

    def move_rows(self, src: int, dst: int) -> None:
        for r in (src, dst):
            if not 0 <= r < self.spec.max_batch:
                raise ValueError(f"row {r} is outside [0, max_batch={self.spec.max_batch})")
        if not (self._tc.supports_rows and self._dc.supports_rows):
            raise NotImplementedError(ROWS_NEED_INPLACE)
        if src != dst:
            self._tc.move_row(src, dst)
            self._dc.move_row(src, dst)

    def _select(self, lo: int, hi: int) -> None:
        self.batch = hi - lo
        self._tc.select(lo, hi)
        self._dc.select(lo, hi)

    def _check_batch(self, b: int) -> None:
        if b != self.batch:
            raise ValueError(f"got {b} rows but the executor was reset for {self.batch}")

    def _check_writes(self, write_index: torch.Tensor, caches) -> None:
        if self.verify_writes and isinstance(caches, LayerCaches):
            check_contiguous_writes(write_index)

    def move_target_kv(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        if src.shape != dst.shape or src.shape[0] != self.batch:
            raise ValueError(f"src {list(src.shape)} and dst {list(dst.shape)} must both be [{self.batch}, A]")
        dev = self.spec.device
        with torch.inference_mode():
            self._tc.move_slots(src.to(dev, torch.int64), dst.to(dev, torch.int64))


def caches_for(input_names, shape_of, dtype: torch.dtype, max_batch: int, device: torch.device):
    """The cache buffers a graph's (or engine's) inputs call for: LayerCaches for the inplace
    flavour, StackedCaches for the copy flavour. `shape_of(name)` gives an input's shape (batch
    axis any value); returns (caches, cache capacity S)."""
    from ...builders.kv_layout import COPY, cache_pairs, flavour_of

    names = list(input_names)
    if flavour_of(names) == COPY:
        s = list(shape_of("k_cache"))
        if len(s) == 5:  # the target: [L, B, KVH, S, D]
            return StackedCaches(lambda b: (s[0], b, *s[2:]), dtype, max_batch, device, batch_dim=1), s[3]
        return StackedCaches(lambda b: (b, *s[1:]), dtype, max_batch, device, batch_dim=0), s[2]
    pairs = cache_pairs(names)
    s = list(shape_of(pairs[0][0]))  # [B, KVH, S, D]
    return LayerCaches(pairs, s[1:], dtype, max_batch, device), s[2]


def logit_rows(logit_index: torch.Tensor | None, b: int, t: int, device: torch.device) -> torch.Tensor:
    """The logit_index to feed an in-place target graph: the given rows, or all T columns."""
    if logit_index is None:
        return torch.arange(t, device=device).expand(b, t).contiguous()
    if logit_index.dim() != 2 or logit_index.shape[0] != b:
        raise ValueError(f"logit_index has shape {list(logit_index.shape)}, expected [{b}, R]")
    return logit_index.to(device=device, dtype=torch.int64).contiguous()
