"""The model math of one scheduler step: prefill a row range, or draft, verify and accept over [0, B).

Shapes are static per step kind (prefill: padded prompts; drafting: k frontier nodes per pass;
verify: the whole tree; drafter update: the longest acceptable path), so the same code drives
torch, onnxruntime and TensorRT executors and can be captured in CUDA graphs.

Cache bookkeeping per row b, with ctx[b] the number of target tokens already in the caches:
- the target cache holds positions [0, ctx); the tree is written at slots ctx + column and the
  accepted path is then moved to ctx, ctx + 1, ...
- the drafter's entry t pairs target feature h_t with token x_(t+1), so its stable part also has
  ctx entries; draft passes write scratch entries after it, overwritten next round.
- every call writes one contiguous run of slots per row (prefill 0..P-1, verify ctx + 0..T-1,
  drafter update ctx + 0..A-1, dynamic draft pass i at ctx + i*k + 0..k-1, static level at its
  consecutive columns): the in-place KV graphs' TensorScatter relies on it, executors check it.
- a step at a plain budget (the schedule's answer to load) runs no drafter at all: each row keeps
  the target's feature and the emitted token of the position it decoded as a pending drafter entry
  (`SlotState.pend_*`). The drafter then holds ctx - pend_n entries; the next drafting step (or a
  row's pending entries reaching capacity) writes them all in one batched drafter call first.

Per-slot state (`SlotState`) lives in tensors of max_batch rows; a step reads and writes the
slices of the rows it runs on. Which token a row emits is decided by `score`: raw logits for
greedy rows, Gumbel-perturbed log-probabilities for sampling rows (runtime/sampling.py), so one
greedy acceptance serves every row.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..recipe import TreeConfig
from ..tree import DraftTree, StaticTree
from .executors.base import Executor

# score(logits [B, T, V], depths [B, T]) -> scores [B, T, V] whose argmax is each row's token.
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SlotState:
    """What the next step needs per cache row: context length, root token, the drafter's view of it."""

    def __init__(self, max_batch: int, top_k: int, hidden: int, feature_dtype: torch.dtype, device: torch.device,
                 pending: int = 1):
        self.ctx = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.root = torch.zeros(max_batch, dtype=torch.long, device=device)  # last emitted token, not cached yet
        self.root_logp = torch.zeros(max_batch, top_k, device=device)
        self.root_ids = torch.zeros(max_batch, top_k, dtype=torch.long, device=device)
        self.root_feat = torch.zeros(max_batch, hidden, dtype=feature_dtype, device=device)
        # Drafter entries not written yet (plain-budget steps): target positions ctx - pend_n .. ctx - 1.
        self.pend_n = torch.zeros(max_batch, dtype=torch.long, device=device)
        self.pend_feat = torch.zeros(max_batch, pending, hidden, dtype=feature_dtype, device=device)
        self.pend_tok = torch.zeros(max_batch, pending, dtype=torch.long, device=device)
        self.pend_max = 0  # host-side bound on pend_n (no device sync to ask whether to catch up)
        self._all = (self.ctx, self.root, self.root_logp, self.root_ids, self.root_feat,
                     self.pend_n, self.pend_feat, self.pend_tok)

    @property
    def pending_capacity(self) -> int:
        return self.pend_tok.shape[1]

    def move(self, src: int, dst: int) -> None:
        for t in self._all:
            t[dst] = t[src]

    def clear(self, slot: int) -> None:
        """A free slot rides along as padding: context 0 keeps its scratch writes in bounds."""
        self.ctx[slot] = 0
        self.root[slot] = 0
        self.pend_n[slot] = 0


@dataclass
class _Prefilled:
    lo: int
    tokens: torch.Tensor
    pos: torch.Tensor
    lens: torch.Tensor
    hidden: torch.Tensor
    first: torch.Tensor


@dataclass
class StepOutput:
    tokens: list[list[int]]  # per row: the tokens this step emits (accepted drafts + bonus)
    drafted: int  # draft nodes verified per speculative row (tree size - 1)
    tree_tokens: int  # positions verified per row (1: plain decoding)
    draft_s: float
    verify_s: float


class StepRunner:
    def __init__(self, executor: Executor, tree: TreeConfig, state: SlotState):
        self.ex = executor
        self.state = state
        spec = executor.spec
        self.dev = spec.device
        self.feature_dtype = spec.feature_dtype
        ops = executor.tree_ops()
        self.expand, self.select, self.greedy_accept = ops.expand, ops.select, ops.greedy_accept
        self.static = StaticTree(tree.choices) if tree.choices else None
        self._cols_t = torch.arange(spec.target_kv_len, device=self.dev)
        self._cols_d = torch.arange(spec.drafter_kv_len, device=self.dev)
        if self.static:
            # Drafter scratch slot of static column c is c - 1 (the root lives in the stable part).
            anc = self.static.build(torch.zeros(1, self.static.size, dtype=torch.long, device=self.dev)).mask[0]
            self._static_anc = anc[:, 1:]

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    @staticmethod
    def _context_mask(ctx: torch.Tensor, t: int, cols: torch.Tensor) -> torch.Tensor:
        return (cols[None, None, :] < ctx[:, None, None]).expand(ctx.shape[0], t, cols.shape[0]).clone()

    # ------------------------------------------------------------------ prefill
    def prefill(self, lo: int, prompts: list[list[int]], score: Scorer) -> tuple[list[int], "_Prefilled"]:
        """Target prefill of rows [lo, lo + len(prompts)) (already selected on the executor).

        Returns each row's first token (to stream before the drafter runs) and what `prefill_drafter`
        needs.
        """
        B = len(prompts)
        lens = torch.tensor([len(p) for p in prompts], device=self.dev)
        P = int(lens.max())
        tokens = torch.zeros(B, P, dtype=torch.long, device=self.dev)
        for b, p in enumerate(prompts):
            tokens[b, : len(p)] = torch.tensor(p, device=self.dev)
        pos = torch.arange(P, device=self.dev).expand(B, P)
        last = lens - 1
        # Logits of each prompt's last token only ([B, 1, V] instead of [B, P, V]).
        logits, hidden = self.ex.target_step(
            tokens, pos, pos, self._causal(pos, lens, self._cols_t), logit_index=last[:, None]
        )
        first = score(logits, torch.zeros(B, 1, dtype=torch.long, device=self.dev))
        first = first[:, 0].argmax(-1)
        s = self.state
        s.ctx[lo : lo + B] = lens
        s.root[lo : lo + B] = first
        return first.tolist(), _Prefilled(lo, tokens, pos, lens, hidden, first)

    def prefill_drafter(self, p: "_Prefilled") -> None:
        """Drafter prefill (rows selected as for `prefill`): feature h_t with token x_(t+1); the last
        pair uses the new first token."""
        B, P = p.tokens.shape
        rows = torch.arange(B, device=self.dev)
        last = p.lens - 1
        dtok = torch.zeros_like(p.tokens)
        dtok[:, : P - 1] = p.tokens[:, 1:]
        dtok[rows, last] = p.first
        mask = self._causal(p.pos, p.lens, self._cols_d)
        vals, ids, reg = self.ex.draft_step(p.hidden.to(self.feature_dtype), dtok, p.pos, p.pos, mask)
        self._set_root(p.lo, vals, ids, reg, last)
        self._sync()

    @staticmethod
    def _causal(pos: torch.Tensor, lens: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        c = cols[None, None, :]
        return (c <= pos[:, :, None]) & (c < lens[:, None, None])

    def _set_root(self, lo: int, vals, ids, reg, at: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """Each row's drafter output at column `at` becomes its root (rows where `only` is true)."""
        rows = torch.arange(vals.shape[0], device=self.dev)
        hi = lo + vals.shape[0]
        s = self.state
        new = (vals[rows, at], ids[rows, at], reg[rows, at])
        for dst, v in zip((s.root_logp, s.root_ids, s.root_feat), new):
            dst[lo:hi] = v if only is None else torch.where(only[:, None], v, dst[lo:hi])

    def _catch_up(self, B: int) -> None:
        """Write rows [0, B)'s pending drafter entries in one drafter call (rows without any write
        scratch slots at ctx.. and keep their root)."""
        s = self.state
        n, ctx = s.pend_n[:B], s.ctx[:B]
        # A power-of-two width (within capacity): few distinct shapes for CUDA graphs and profiles.
        T = min(1 << (s.pend_max - 1).bit_length(), s.pending_capacity)
        pos = (ctx - n)[:, None] + torch.arange(T, device=self.dev)
        mask = self._cols_d[None, None, :] <= pos[:, :, None]
        vals, ids, reg = self.ex.draft_step(s.pend_feat[:B, :T], s.pend_tok[:B, :T], pos, pos, mask)
        self._set_root(0, vals, ids, reg, (n - 1).clamp(min=0), only=n > 0)
        s.pend_n[:B] = 0
        s.pend_max = 0

    # ------------------------------------------------------------------ decode
    def decode(
        self, B: int, tree: TreeConfig, live: torch.Tensor, plain: torch.Tensor, score: Scorer, update_drafter: bool
    ) -> StepOutput:
        """One step over rows [0, B) (already selected) with tree budget `tree` (tree_size 1: plain).

        `live` [B] bool marks rows holding a request (the others are free slots riding along as
        padding). `plain` [B] bool marks rows decoding without speculation: their tree is the root
        alone (they ride along in a speculative step and accept nothing drafted). `update_drafter`
        keeps the drafter in step with the accepted tokens (needed while any row speculates): a
        drafter call after the verify, or, at a plain budget, pending entries (module docstring).
        """
        s = self.state
        t0 = time.perf_counter()
        drafting = tree.tree_size > 1
        if drafting and s.pend_max:
            self._catch_up(B)
        ctx, root = s.ctx[:B], s.root[:B]
        if drafting:
            dt = self._draft_static(B, ctx, root) if self.static else self._draft_dynamic(B, ctx, root, tree)
        else:
            dt = None
        self._sync()
        t1 = time.perf_counter()

        T = dt.size if dt is not None else 1
        tokens = dt.tokens if dt is not None else root[:, None].clone()
        depths = dt.depths if dt is not None else torch.zeros(B, 1, dtype=torch.long, device=self.dev)
        pos = ctx[:, None] + depths
        write = ctx[:, None] + torch.arange(T, device=self.dev)
        mask = self._context_mask(ctx, T, self._cols_t)
        own = dt.mask if dt is not None else torch.ones(B, 1, 1, dtype=torch.bool, device=self.dev)
        mask.scatter_(2, write[:, None, :].expand(B, T, T), own)
        logits, hidden = self.ex.target_step(tokens, pos, write, mask)
        scores = score(logits, depths)
        if dt is not None:
            path, count, bonus = self.greedy_accept(dt, scores)
            if bool(plain.any()):
                # A plain row's tree is its root alone: nothing drafted is accepted.
                j = torch.arange(path.shape[1], device=self.dev)
                path = torch.where(plain[:, None] & (j > 0), -1, path)
                count = torch.where(plain, 1, count)
                bonus = torch.where(plain, scores[:, 0].argmax(-1), bonus)
        else:
            path = torch.zeros(B, 1, dtype=torch.long, device=self.dev)
            count = torch.ones(B, dtype=torch.long, device=self.dev)
            bonus = scores[:, 0].argmax(-1)
        self._sync()
        t2 = time.perf_counter()

        A = path.shape[1]
        j = torch.arange(A, device=self.dev)
        dst = ctx[:, None] + j
        if T > 1:
            # Move the accepted entries to the front of the scratch region; pads copy onto themselves.
            src = torch.where(path >= 0, ctx[:, None] + path, dst)
            if not torch.equal(src, dst):  # a path along the first columns (a chain's) is in place already
                self.ex.move_target_kv(src, dst)
        safe = path.clamp(min=0)
        path_tok = tokens.gather(1, safe)
        if update_drafter and not drafting:
            # Plain budget: no drafter call; the drafter's entry for this position waits (steps.py header).
            keep = live & ~plain
            at = s.pend_n[:B].clamp(max=s.pending_capacity - 1)
            rows = torch.arange(B, device=self.dev)
            s.pend_feat[rows, at] = torch.where(keep[:, None], hidden[:, 0].to(self.feature_dtype), s.pend_feat[rows, at])
            s.pend_tok[rows, at] = torch.where(keep, bonus, s.pend_tok[rows, at])
            s.pend_n[:B] += keep.long()
            s.pend_max += 1
        elif update_drafter:
            # Drafter update over the accepted path: feature of node i with the token that follows it.
            rows = torch.arange(B, device=self.dev)
            feat = hidden.gather(1, safe[..., None].expand(-1, -1, hidden.shape[-1]))
            utok = torch.cat([path_tok[:, 1:], bonus[:, None]], dim=1)
            utok[rows, count - 1] = bonus
            umask = self._cols_d[None, None, :] < (dst + 1)[:, :, None]
            vals, ids, reg = self.ex.draft_step(feat.to(self.feature_dtype), utok, dst, dst, umask)
            self._set_root(0, vals, ids, reg, count - 1)
        s.ctx[:B] = ctx + torch.where(live, count, 0)
        s.root[:B] = bonus
        if s.pend_max >= s.pending_capacity:
            self._catch_up(B)
        self._sync()
        t3 = time.perf_counter()

        count_l, path_l, bonus_l = count.tolist(), path_tok.tolist(), bonus.tolist()
        out = [path_l[b][1 : count_l[b]] + [bonus_l[b]] for b in range(B)]
        return StepOutput(out, T - 1, T, (t1 - t0) + (t3 - t2), t2 - t1)

    def _draft_dynamic(self, B: int, ctx: torch.Tensor, root: torch.Tensor, tc: TreeConfig) -> DraftTree:
        s = self.state
        k, depth = tc.top_k, tc.depth
        root_feat = s.root_feat[:B]
        H = root_feat.shape[-1]
        nslots = depth * k
        scores, ftok = s.root_logp[:B, :k], s.root_ids[:B, :k]
        cand_s, cand_i = [scores], [ftok]
        cand_p = [torch.full((B, k), -1, dtype=torch.long, device=self.dev)]
        cand_d = [torch.ones(B, k, dtype=torch.long, device=self.dev)]
        fidx = torch.arange(k, device=self.dev).expand(B, k)
        feats = root_feat[:, None, :].expand(B, k, H)
        anc = torch.zeros(B, k, nslots, dtype=torch.bool, device=self.dev)
        base = self._context_mask(ctx, k, self._cols_d)
        slot_cols = (ctx[:, None] + torch.arange(nslots, device=self.dev))[:, None, :].expand(B, k, nslots)
        frontier = torch.arange(k, device=self.dev)
        for i in range(depth):
            own = i * k + frontier
            anc[:, frontier, own] = True
            mask = base.clone().scatter_(2, slot_cols, anc)
            pos = (ctx + i)[:, None].expand(B, k)
            write = ctx[:, None] + own
            vals, ids, reg = self.ex.draft_step(feats, ftok, pos, write, mask)
            cand, cids, scores, ftok, nflat = self.expand(scores, vals[..., :k], ids[..., :k], k)
            cand_s.append(cand)
            cand_i.append(cids)
            cand_p.append(fidx.repeat_interleave(k, dim=1))
            cand_d.append(torch.full_like(cids, i + 2))
            if i + 1 < depth:
                parent = nflat // k
                fidx = k + i * k * k + nflat
                feats = reg.gather(1, parent[..., None].expand(-1, -1, H))
                anc = anc.gather(1, parent[..., None].expand(-1, -1, nslots))
        return self.select(
            root,
            torch.cat(cand_s, 1),
            torch.cat(cand_i, 1),
            torch.cat(cand_p, 1),
            torch.cat(cand_d, 1),
            tc.total_tokens,
            depth + 1,
        )

    def _draft_static(self, B: int, ctx: torch.Tensor, root: torch.Tensor) -> DraftTree:
        st = self.static
        s = self.state
        tokens = torch.zeros(B, st.size, dtype=torch.long, device=self.dev)
        tokens[:, 0] = root
        top_ids = {0: s.root_ids[:B]}
        feats = {0: s.root_feat[:B]}
        nslots = st.size - 1
        slot_cols = ctx[:, None] + torch.arange(nslots, device=self.dev)
        for level in range(1, st.max_depth + 1):
            nodes = st.levels[level]
            for n in nodes:
                tokens[:, n] = top_ids[st.parents[n]][:, st.ranks[n]]
            if level == st.max_depth:
                break
            cols = torch.tensor(nodes, device=self.dev)
            m = len(nodes)
            f = torch.stack([feats[st.parents[n]] for n in nodes], dim=1)
            mask = self._context_mask(ctx, m, self._cols_d)
            mask.scatter_(2, slot_cols[:, None, :].expand(B, m, nslots), self._static_anc[cols].expand(B, m, nslots))
            pos = (ctx + level - 1)[:, None].expand(B, m)
            write = ctx[:, None] + cols - 1
            _, ids, reg = self.ex.draft_step(f, tokens[:, cols], pos, write, mask)
            for i, n in enumerate(nodes):
                top_ids[n] = ids[:, i]
                feats[n] = reg[:, i]
        return st.build(tokens)
