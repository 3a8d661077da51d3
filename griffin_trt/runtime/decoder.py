"""The GRIFFIN decoding loop: prefill, draft a tree, verify it in one target forward, accept, repeat.

Shapes are static per step kind (prefill: padded prompts; drafting: k frontier nodes per pass;
verify: the whole tree; drafter update: the longest acceptable path), so the same loop drives
torch, onnxruntime and TensorRT executors and can be captured in CUDA graphs.

Cache bookkeeping per row b, with ctx[b] the number of target tokens already in the caches:
- the target cache holds positions [0, ctx); the tree is written at slots ctx + column and the
  accepted path is then moved to ctx, ctx + 1, ...
- the drafter's entry t pairs target feature h_t with token x_(t+1), so its stable part also has
  ctx entries; draft passes write scratch entries after it, overwritten next round.
- every call writes one contiguous run of slots per row (prefill 0..P-1, verify ctx + 0..T-1,
  drafter update ctx + 0..A-1, dynamic draft pass i at ctx + i*k + 0..k-1, static level at its
  consecutive columns): the in-place KV graphs' TensorScatter relies on it, executors check it.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Sequence

import torch

from ..recipe import Limits, TreeConfig
from ..tree import DraftTree, StaticTree, process_logits, sample_accept
from .executors.base import Executor
from .results import GenerationResult, SamplingParams

TokenCallback = Callable[[int, list[int]], None]


class SpeculativeDecoder:
    def __init__(self, executor: Executor, tree: TreeConfig, limits: Limits, eos_ids: Iterable[int] = ()):
        self.ex = executor
        self.tree = tree
        self.limits = limits
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.static = StaticTree(tree.choices) if tree.choices else None
        spec = executor.spec
        need_k = self.static.max_rank if self.static else tree.top_k
        if spec.top_k < need_k:
            raise ValueError(f"the drafter returns top-{spec.top_k} candidates but the tree needs {need_k}")
        if spec.target_kv_len < limits.max_seq_len + tree.tree_size:
            raise ValueError(
                f"target cache holds {spec.target_kv_len} slots; the limits need "
                f"{limits.max_seq_len} + {tree.tree_size} (tree)"
            )
        if spec.drafter_kv_len < limits.max_seq_len + tree.max_accept + tree.drafter_slots:
            raise ValueError(f"drafter cache of {spec.drafter_kv_len} slots is too small for these limits and tree")
        dev = spec.device
        self.dev = dev
        ops = executor.tree_ops()
        self.expand, self.select, self.greedy_accept = ops.expand, ops.select, ops.greedy_accept
        self._cols_t = torch.arange(spec.target_kv_len, device=dev)
        self._cols_d = torch.arange(spec.drafter_kv_len, device=dev)
        if self.static:
            # Drafter scratch slot of static column c is c - 1 (the root lives in the stable part).
            anc = self.static.build(torch.zeros(1, self.static.size, dtype=torch.long, device=dev)).mask[0]
            self._static_anc = anc[:, 1:]

    # ------------------------------------------------------------------ public
    def validate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> None:
        if not prompts:
            raise ValueError("no prompts given")
        if len(prompts) > self.ex.spec.max_batch:
            raise ValueError(f"{len(prompts)} prompts exceed max_batch {self.ex.spec.max_batch}")
        vocab = self.ex.spec.vocab_size
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty")
            if len(p) > self.limits.max_input_len:
                raise ValueError(f"prompt {i} has {len(p)} tokens; max_input_len is {self.limits.max_input_len}")
            if min(p) < 0 or max(p) >= vocab:
                raise ValueError(f"prompt {i} has token ids outside [0, {vocab})")
        if not 1 <= max_new_tokens <= self.limits.max_output_len:
            raise ValueError(f"max_new_tokens must be in [1, {self.limits.max_output_len}], got {max_new_tokens}")

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        speculative: bool = True,
        stop_ids: Iterable[int] | None = None,
        on_tokens: TokenCallback | None = None,
        arrival_time_ns: int | None = None,
    ) -> list[GenerationResult]:
        """Generate for a batch of token-id prompts. `on_tokens(row, ids)` streams tokens as accepted."""
        sampling = sampling or SamplingParams()
        sampling.validate()
        self.validate(prompts, max_new_tokens)
        run = _Run(self, prompts, max_new_tokens, sampling, stop_ids, on_tokens, arrival_time_ns)
        with torch.inference_mode():
            run.prefill(speculative)
            while not run.all_done():
                run.speculative_step() if speculative else run.plain_step()
        return run.results


class _Run:
    """State of one `generate` call."""

    def __init__(self, dec: SpeculativeDecoder, prompts, max_new, sampling, stop_ids, on_tokens, arrival_ns):
        self.d = dec
        self.ex = dec.ex
        self.spec = dec.ex.spec
        self.dev = dec.dev
        self.B = len(prompts)
        self.prompts = [list(map(int, p)) for p in prompts]
        self.max_new = max_new
        self.sampling = sampling
        self.stop = dec.eos_ids | frozenset(int(s) for s in (stop_ids or ()))
        self.on_tokens = on_tokens
        arrival = arrival_ns or time.time_ns()
        self.results = [GenerationResult(arrival_time_ns=arrival) for _ in prompts]
        self.done = [False] * self.B
        self.gen = None
        if sampling.temperature > 0:
            self.gen = torch.Generator(device=self.dev)
            self.gen.manual_seed(sampling.seed if sampling.seed is not None else secrets.randbits(63))
        self.ex.reset(self.B)
        self.rows = torch.arange(self.B, device=self.dev)

    # ------------------------------------------------------------ helpers
    def all_done(self) -> bool:
        return all(self.done)

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        s = self.sampling
        if s.temperature == 0:
            return logits.argmax(-1)
        probs = process_logits(logits, s.temperature, s.top_p, s.top_k)
        return torch.multinomial(probs, 1, generator=self.gen).squeeze(-1)

    def _emit(self, row: int, ids: list[int]) -> None:
        """Append tokens to a row, stopping at a stop token or the token budget."""
        if self.done[row]:
            return
        r = self.results[row]
        out = []
        for t in ids:
            out.append(t)
            if t in self.stop:
                r.finish_reason = "stop"
                self.done[row] = True
                break
            if len(r.token_ids) + len(out) >= self.max_new:
                r.finish_reason = "length"
                self.done[row] = True
                break
        now = time.time_ns()
        if not r.token_ids:
            r.first_token_time_ns = now
        r.last_token_time_ns = now
        r.token_ids.extend(out)
        if self.on_tokens and out:
            self.on_tokens(row, out)

    def _context_mask(self, ctx: torch.Tensor, t: int, cols: torch.Tensor) -> torch.Tensor:
        return (cols[None, None, :] < ctx[:, None, None]).expand(self.B, t, cols.shape[0]).clone()

    # ------------------------------------------------------------ prefill
    def prefill(self, speculative: bool) -> None:
        t0 = time.perf_counter()
        lens = torch.tensor([len(p) for p in self.prompts], device=self.dev)
        P = int(lens.max())
        tokens = torch.zeros(self.B, P, dtype=torch.long, device=self.dev)
        for b, p in enumerate(self.prompts):
            tokens[b, : len(p)] = torch.tensor(p, device=self.dev)
        pos = torch.arange(P, device=self.dev).expand(self.B, P)

        def causal(cols):
            c = cols[None, None, :]
            return (c <= pos[:, :, None]) & (c < lens[:, None, None])

        last = lens - 1
        # Logits of each prompt's last token only ([B, 1, V] instead of [B, P, V]).
        logits, hidden = self.ex.target_step(tokens, pos, pos, causal(self.d._cols_t), logit_index=last[:, None])
        first = self._pick(logits[:, 0])
        self._sync()
        for r in self.results:
            r.prefill_time_s = time.perf_counter() - t0
        first_l = first.tolist()
        for b in range(self.B):
            self._emit(b, [first_l[b]])
        self.ctx = lens.clone()
        self.root = first
        if not speculative:
            return
        # Drafter prefill: feature h_t with token x_(t+1); the last pair uses the new first token.
        dtok = torch.zeros_like(tokens)
        dtok[:, : P - 1] = tokens[:, 1:]
        dtok[self.rows, last] = first
        t1 = time.perf_counter()
        vals, ids, reg = self.ex.draft_step(hidden.to(self.spec.feature_dtype), dtok, pos, pos, causal(self.d._cols_d))
        self._set_root(vals, ids, reg, last)
        self._sync()
        for r in self.results:
            r.draft_time_s += time.perf_counter() - t1

    def _set_root(self, vals, ids, reg, at: torch.Tensor) -> None:
        self.root_logp = vals[self.rows, at]
        self.root_ids = ids[self.rows, at]
        self.root_feat = reg[self.rows, at]

    # ------------------------------------------------------------ plain decoding
    def plain_step(self) -> None:
        t0 = time.perf_counter()
        pos = self.ctx[:, None]
        mask = self.d._cols_t[None, None, :] <= pos[:, :, None]
        logits, _ = self.ex.target_step(self.root[:, None], pos, pos, mask)
        nxt = self._pick(logits[:, 0])
        nxt_l = nxt.tolist()
        self._sync()
        dt = time.perf_counter() - t0
        for b in range(self.B):
            if self.done[b]:
                continue
            r = self.results[b]
            r.target_forwards += 1
            r.accepted_per_step.append(1)
            r.verify_time_s += dt
            self._emit(b, [nxt_l[b]])
        active = torch.tensor([not d for d in self.done], device=self.dev)
        self.ctx = self.ctx + active.long()
        self.root = nxt

    # ------------------------------------------------------------ speculative decoding
    def speculative_step(self) -> None:
        t0 = time.perf_counter()
        tree = self._draft_static() if self.d.static else self._draft_dynamic()
        self._sync()
        t1 = time.perf_counter()

        T = tree.size
        cols = torch.arange(T, device=self.dev)
        pos = self.ctx[:, None] + tree.depths
        write = self.ctx[:, None] + cols
        mask = self._context_mask(self.ctx, T, self.d._cols_t)
        mask.scatter_(2, write[:, None, :].expand(self.B, T, T), tree.mask)
        logits, hidden = self.ex.target_step(tree.tokens, pos, write, mask)
        s = self.sampling
        if s.temperature == 0:
            path, count, bonus = self.d.greedy_accept(tree, logits)
        else:
            path, count, bonus = sample_accept(tree, logits, s.temperature, s.top_p, s.top_k, self.gen)
        self._sync()
        t2 = time.perf_counter()

        # Move the accepted entries to the front of the scratch region; pads copy onto themselves.
        A = path.shape[1]
        j = torch.arange(A, device=self.dev)
        dst = self.ctx[:, None] + j
        src = torch.where(path >= 0, self.ctx[:, None] + path, dst)
        self.ex.move_target_kv(src, dst)

        # Drafter update over the accepted path: feature of node i with the token that follows it.
        safe = path.clamp(min=0)
        feat = hidden.gather(1, safe[..., None].expand(-1, -1, hidden.shape[-1]))
        path_tok = tree.tokens.gather(1, safe)
        utok = torch.cat([path_tok[:, 1:], bonus[:, None]], dim=1)
        utok[self.rows, count - 1] = bonus
        umask = self.d._cols_d[None, None, :] < (dst + 1)[:, :, None]
        vals, ids, reg = self.ex.draft_step(feat.to(self.spec.feature_dtype), utok, dst, dst, umask)
        self._set_root(vals, ids, reg, count - 1)
        self._sync()
        t3 = time.perf_counter()

        count_l, path_tok_l, bonus_l = count.tolist(), path_tok.tolist(), bonus.tolist()
        drafted = T - 1
        for b in range(self.B):
            if self.done[b]:
                continue
            r = self.results[b]
            n = count_l[b]
            r.target_forwards += 1
            r.accepted_per_step.append(n)
            r.accepted_draft_tokens += n - 1
            r.draft_tokens += drafted
            if len(r.accepted_per_position) < A - 1:
                r.accepted_per_position.extend([0] * (A - 1 - len(r.accepted_per_position)))
            for d in range(n - 1):
                r.accepted_per_position[d] += 1
            r.draft_time_s += (t1 - t0) + (t3 - t2)
            r.verify_time_s += t2 - t1
            self._emit(b, path_tok_l[b][1:n] + [bonus_l[b]])
        active = torch.tensor([not d for d in self.done], device=self.dev)
        self.ctx = self.ctx + torch.where(active, count, 0)
        self.root = bonus

    def _draft_dynamic(self) -> DraftTree:
        tc = self.d.tree
        k, depth, B = tc.top_k, tc.depth, self.B
        H = self.root_feat.shape[-1]
        nslots = depth * k
        scores, ftok = self.root_logp[:, :k], self.root_ids[:, :k]
        cand_s, cand_i = [scores], [ftok]
        cand_p = [torch.full((B, k), -1, dtype=torch.long, device=self.dev)]
        cand_d = [torch.ones(B, k, dtype=torch.long, device=self.dev)]
        fidx = torch.arange(k, device=self.dev).expand(B, k)
        feats = self.root_feat[:, None, :].expand(B, k, H)
        anc = torch.zeros(B, k, nslots, dtype=torch.bool, device=self.dev)
        base = self._context_mask(self.ctx, k, self.d._cols_d)
        slot_cols = (self.ctx[:, None] + torch.arange(nslots, device=self.dev))[:, None, :].expand(B, k, nslots)
        frontier = torch.arange(k, device=self.dev)
        for i in range(depth):
            own = i * k + frontier
            anc[:, frontier, own] = True
            mask = base.clone().scatter_(2, slot_cols, anc)
            pos = (self.ctx + i)[:, None].expand(B, k)
            write = self.ctx[:, None] + own
            vals, ids, reg = self.ex.draft_step(feats, ftok, pos, write, mask)
            cand, cids, scores, ftok, nflat = self.d.expand(scores, vals[..., :k], ids[..., :k], k)
            cand_s.append(cand)
            cand_i.append(cids)
            cand_p.append(fidx.repeat_interleave(k, dim=1))
            cand_d.append(torch.full_like(cids, i + 2))
            if i + 1 < depth:
                parent = nflat // k
                fidx = k + i * k * k + nflat
                feats = reg.gather(1, parent[..., None].expand(-1, -1, H))
                anc = anc.gather(1, parent[..., None].expand(-1, -1, nslots))
        return self.d.select(
            self.root,
            torch.cat(cand_s, 1),
            torch.cat(cand_i, 1),
            torch.cat(cand_p, 1),
            torch.cat(cand_d, 1),
            tc.total_tokens,
            depth + 1,
        )

    def _draft_static(self) -> DraftTree:
        st = self.d.static
        B = self.B
        tokens = torch.zeros(B, st.size, dtype=torch.long, device=self.dev)
        tokens[:, 0] = self.root
        top_ids = {0: self.root_ids}
        feats = {0: self.root_feat}
        nslots = st.size - 1
        slot_cols = self.ctx[:, None] + torch.arange(nslots, device=self.dev)
        for level in range(1, st.max_depth + 1):
            nodes = st.levels[level]
            for n in nodes:
                tokens[:, n] = top_ids[st.parents[n]][:, st.ranks[n]]
            if level == st.max_depth:
                break
            cols = torch.tensor(nodes, device=self.dev)
            m = len(nodes)
            f = torch.stack([feats[st.parents[n]] for n in nodes], dim=1)
            mask = self._context_mask(self.ctx, m, self.d._cols_d)
            mask.scatter_(2, slot_cols[:, None, :].expand(B, m, nslots), self.d._static_anc[cols].expand(B, m, nslots))
            pos = (self.ctx + level - 1)[:, None].expand(B, m)
            write = self.ctx[:, None] + cols - 1
            _, ids, reg = self.ex.draft_step(f, tokens[:, cols], pos, write, mask)
            for i, n in enumerate(nodes):
                top_ids[n] = ids[:, i]
                feats[n] = reg[:, i]
        return st.build(tokens)
