"""In-flight batching: a step-level scheduler over the executor's max_batch cache rows (slots).

Every `step()`:
  1. retires cancelled rows,
  2. admits waiting requests into free slots and prefills them on their own row range (streaming
     each first token before the drafter's prefill; requests arriving meanwhile are admitted too),
  3. runs one draft-and-verify step over all active rows (a bucketed row range [0, B)) with the tree
     budget the recipe's schedule gives for that many rows,
  4. streams each row's new tokens and retires finished rows at once, freeing their slots.

Active rows stay packed in [0, n): a retired row's slot receives the last active row
(`Executor.move_rows`), so a decode step always runs on rows [0, B) with B = the smallest bucket
>= n (powers of two and max_batch; rows [n, B) are free slots riding along as padding). Shapes thus
stay static per (step kind, bucket, budget) and CUDA graphs / TensorRT profiles keep working. An
executor that cannot select rows (`select_rows` raises NotImplementedError) is batched statically:
a new group is admitted only when the previous one has finished.

Each row carries its own request: prompt, sampling settings with its own seeded generator
(runtime/sampling.py: a seed gives the same tokens alone or in a crowd), max tokens, stop ids and
stop strings, speculative or plain. A plain row's tree is its root alone. Thread safety: `submit`
and `cancel` may be called from any thread; `step` from one thread at a time.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .. import request_rules as rules
from ..recipe import PLAIN, Limits, TreeConfig, TreeSchedule
from .executors.base import Executor
from .results import GenerationResult, SamplingParams
from .sampling import PositionNoise, sampled_scores
from .steps import SlotState, StepRunner


@dataclass(eq=False)
class Request:
    """One generation request. Callbacks run on the thread that calls `Scheduler.step`."""

    prompt: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    speculative: bool = True
    stop_ids: frozenset[int] = frozenset()
    stop_strings: tuple[str, ...] = ()  # stop once the generated text contains one (it is kept)
    on_tokens: Callable[[list[int]], None] | None = None  # new tokens, as soon as they are accepted
    on_finish: Callable[["Request"], None] | None = None  # once, when the request leaves the scheduler
    arrival_time_ns: int = 0
    result: GenerationResult = field(default_factory=GenerationResult)
    cancelled: bool = False
    finished: bool = False
    error: str = ""


@dataclass(frozen=True)
class StepInfo:
    """One decode step: how many rows held requests, the row range it ran on, the tree budget."""

    active: int
    rows: int
    tree_tokens: int  # positions verified per row (1: plain decoding)
    depth: int
    admitted: int
    seconds: float


def catch_up_capacity(tree: TreeConfig, limits: Limits) -> int:
    """Drafter entries a row may owe (plain-budget steps) before one drafter call writes them: the
    drafter cache's scratch room beyond the context, within a drafter profile's token range."""
    return max(tree.max_accept, min(tree.max_accept + tree.drafter_slots, limits.max_input_len))


def batch_buckets(max_batch: int) -> list[int]:
    """Row counts decode steps run at: powers of two below max_batch, and max_batch."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


class _Row:
    __slots__ = ("req", "noise", "stop", "done", "reason")

    def __init__(self, req: Request, noise: PositionNoise | None, stop: frozenset[int]):
        self.req, self.noise, self.stop = req, noise, stop
        self.done, self.reason = False, ""


class Scheduler:
    def __init__(
        self,
        executor: Executor,
        tree: TreeConfig,
        limits: Limits,
        eos_ids: Iterable[int] = (),
        schedule: TreeSchedule = TreeSchedule(),
        detokenize: Callable[[list[int]], str] | None = None,
    ):
        self.ex = executor
        spec = executor.spec
        self.tree, self.limits, self.schedule = tree, limits, schedule
        self.eos_ids = frozenset(int(e) for e in eos_ids)
        self.detokenize = detokenize
        self.max_batch = min(spec.max_batch, limits.max_batch)  # rows in use; the executor may hold more
        self.vocab = spec.vocab_size
        self.dev = spec.device
        self.state = SlotState(self.max_batch, spec.top_k, spec.hidden_size, spec.feature_dtype, spec.device,
                               pending=catch_up_capacity(tree, limits))
        self.runner = StepRunner(executor, tree, self.state)
        self.buckets = batch_buckets(self.max_batch)
        self.slots: list[_Row | None] = [None] * self.max_batch
        self.n = 0  # rows in use: [0, n) (static batching: the group, holes included)
        self.waiting: deque[Request] = deque()
        self._inbox: deque[Request] = deque()
        self._cv = threading.Condition()
        self._rows: tuple[int, int] | None = None  # the executor's current row range
        try:
            executor.select_rows(0, 1)
            self._rows = (0, 1)
            self.packed = True
        except NotImplementedError:
            self.packed = False
        # Newcomers prefilled per target call. A CPU is compute-bound: prefilling prompts one after
        # another costs what prefilling them together does, and streams each first token sooner.
        # A GPU prefills a few prompts in about the time of one.
        self.prefill_rows = self.max_batch if spec.device.type == "cuda" else 1
        self.on_step: Callable[[StepInfo], None] | None = None

    # ------------------------------------------------------------------ requests
    def check(self, req: Request) -> None:
        """Raise ValueError naming what makes `req` unusable (the rules every front end shares)."""
        req.sampling.validate()
        rules.check_prompt_ids(req.prompt, self.limits.max_input_len, self.vocab)
        rules.check_max_tokens(req.max_new_tokens, self.limits.max_output_len)
        bad = sorted(t for t in req.stop_ids if not 0 <= t < self.vocab)
        if bad:
            raise ValueError(f"stop/end id(s) {bad} are outside [0, {self.vocab})")
        if req.stop_strings:
            if any(not isinstance(s, str) or not s for s in req.stop_strings):
                raise ValueError("stop strings must be non-empty text")
            if self.detokenize is None:
                raise ValueError("stop strings need a tokenizer, and this decoder has none")

    def submit(self, req: Request) -> Request:
        self.check(req)
        if not req.arrival_time_ns:
            req.arrival_time_ns = time.time_ns()
        req.result.arrival_time_ns = req.arrival_time_ns
        with self._cv:
            self._inbox.append(req)
            self._cv.notify_all()
        return req

    def cancel(self, req: Request) -> None:
        """The request's row is retired (its slot freed) at the start of the next step."""
        req.cancelled = True
        with self._cv:
            self._cv.notify_all()

    def has_work(self) -> bool:
        return bool(self.n or self.waiting or self._inbox)

    def wait_for_work(self, timeout: float | None = None) -> bool:
        with self._cv:
            return self._cv.wait_for(self.has_work, timeout)

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.slots[: self.n])

    # ------------------------------------------------------------------ the loop
    def step(self) -> StepInfo | None:
        """Admit, decode one step over every active row, retire. Returns the decode step's info."""
        try:
            with torch.inference_mode():
                self._retire_if(lambda row: row.req.cancelled, "cancelled")
                admitted = self._admit_arrivals()
                self._retire_if(lambda row: row.done)
                info = self._decode(admitted) if self.active else None
                self._retire_if(lambda row: row.done)
        except Exception as e:
            self._fail_all(f"{type(e).__name__}: {e}")
            raise
        if info is not None and self.on_step is not None:
            self.on_step(info)
        return info

    def _admit_arrivals(self) -> int:
        """Admit waiting requests into free rows, again while more arrive during the prefills (they
        join before this step's decode, not after it)."""
        self._drain_inbox()
        admitted = 0
        while True:
            newly = self._admit()
            admitted += newly
            if not newly or not self._drain_inbox():
                return admitted

    def _drain_inbox(self) -> int:
        with self._cv:
            n = len(self._inbox)
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        return n

    def _select(self, lo: int, hi: int) -> None:
        if self._rows != (lo, hi):
            self.ex.select_rows(lo, hi)
            self._rows = (lo, hi)

    def _admit(self) -> int:
        if not self.packed and self.n:
            return 0  # static batching: the running group finishes first
        take: list[Request] = []
        while self.waiting and self.n + len(take) < self.max_batch:
            req = self.waiting.popleft()
            if req.cancelled:
                self._finish(req, "cancelled")
            else:
                take.append(req)
        if not take:
            return 0
        lo, hi = self.n, self.n + len(take)
        group = self.prefill_rows
        if not self.packed:
            self.ex.reset(len(take))
            group = len(take)  # a static batch is prefilled at once
        now = time.time_ns()
        for i, req in enumerate(take):
            req.result.scheduled_time_ns = now
            noise = None
            sp = req.sampling
            if sp.temperature > 0:
                seed = sp.seed if sp.seed is not None else secrets.randbits(63)
                noise = PositionNoise(seed, self.vocab, self.dev)
            self.slots[lo + i] = _Row(req, noise, self.eos_ids | req.stop_ids)
        self.n = hi
        # Target prefills first, each group's first tokens streamed at once; the drafter follows.
        drafts = []
        for a in range(lo, hi, group):
            b = min(a + group, hi)
            rows = self.slots[a:b]
            if self.packed:
                self._select(a, b)
            t0 = time.perf_counter()
            first, prefilled = self.runner.prefill(a, [r.req.prompt for r in rows], self._scorer(a))
            t_target = time.perf_counter() - t0  # (`tolist` in prefill waited for the device)
            for row, tok in zip(rows, first):
                row.req.result.prefill_time_s = t_target
                self._emit(row, [tok])
            if any(r.req.speculative for r in rows):
                drafts.append((a, b, rows, prefilled))
        for a, b, rows, prefilled in drafts:
            if self.packed:
                self._select(a, b)
            t1 = time.perf_counter()
            self.runner.prefill_drafter(prefilled)
            for row in rows:
                if row.req.speculative:
                    row.req.result.draft_time_s += time.perf_counter() - t1
        return len(take)

    def _decode(self, admitted: int) -> StepInfo:
        t0 = time.perf_counter()
        rows = list(self.slots[: self.n])
        active = sum(r is not None for r in rows)
        if self.packed:
            B = next(b for b in self.buckets if b >= self.n)
            self._select(0, B)
            rows += [None] * (B - self.n)
        else:
            B = self.n
        speculative = any(r is not None and r.req.speculative for r in rows)
        tree = self.schedule.tree_for(self.tree, active) if speculative else PLAIN
        live = torch.tensor([r is not None for r in rows], device=self.dev)
        plain = torch.tensor([r is not None and not r.req.speculative for r in rows], device=self.dev)
        out = self.runner.decode(B, tree, live, plain, self._scorer(0), update_drafter=speculative)
        for b, row in enumerate(rows):
            if row is None:
                continue
            r = row.req.result
            toks = out.tokens[b]
            r.target_forwards += 1
            r.accepted_per_step.append(len(toks))
            r.draft_time_s += out.draft_s
            r.verify_time_s += out.verify_s
            if row.req.speculative:
                r.tree_tokens_per_step.append(out.tree_tokens)
                r.draft_tokens += out.drafted
                r.accepted_draft_tokens += len(toks) - 1
                if len(r.accepted_per_position) < len(toks) - 1:
                    r.accepted_per_position.extend([0] * (len(toks) - 1 - len(r.accepted_per_position)))
                for d in range(len(toks) - 1):
                    r.accepted_per_position[d] += 1
            else:
                r.tree_tokens_per_step.append(1)
            self._emit(row, toks)
        return StepInfo(active, B, tree.tree_size, tree.depth, admitted, time.perf_counter() - t0)

    def _scorer(self, lo: int):
        """Scores for rows starting at slot `lo`: logits for greedy rows, perturbed for sampling rows."""

        def score(logits: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
            out = logits
            for b in range(logits.shape[0]):
                row = self.slots[lo + b] if lo + b < self.max_batch else None
                if row is None or row.noise is None:
                    continue
                if out is logits:
                    out = logits.clone()
                d = depths[b]
                noise = row.noise.window(len(row.req.result.token_ids), int(d.max()) + 1)[d]
                out[b] = sampled_scores(logits[b], row.req.sampling, noise)
            return out

        return score

    # ------------------------------------------------------------------ tokens and stops
    def _emit(self, row: _Row, ids: list[int]) -> None:
        """Append tokens to a row, stopping at a stop id, a stop string or the token budget."""
        if row.done:
            return
        req, r = row.req, row.req.result
        out: list[int] = []
        for t in ids:
            out.append(t)
            if t in row.stop or (req.stop_strings and self._stop_string_in(row, r.token_ids + out)):
                row.done, row.reason = True, "stop"
                break
            if len(r.token_ids) + len(out) >= req.max_new_tokens:
                row.done, row.reason = True, "length"
                break
        now = time.time_ns()
        if not r.token_ids:
            r.first_token_time_ns = now
        r.last_token_time_ns = now
        r.token_ids.extend(out)
        if req.on_tokens is not None and out:
            req.on_tokens(out)

    def _stop_string_in(self, row: _Row, ids: list[int]) -> bool:
        # The text of a window of tokens ending at the newest one; a stop string completed by an
        # earlier token would have stopped the row then.
        longest = max(len(s) for s in row.req.stop_strings)
        text = self.detokenize(ids[-(longest + 4):])
        return any(s in text for s in row.req.stop_strings)

    # ------------------------------------------------------------------ retiring
    def _retire_if(self, pred: Callable[[_Row], bool], reason: str | None = None) -> None:
        for slot in reversed(range(self.n)):
            row = self.slots[slot]
            if row is None or not pred(row):
                continue
            self._finish(row.req, reason or row.reason)
            self._free(slot)
        if not self.packed and not any(self.slots[: self.n]):
            self.n = 0

    def _free(self, slot: int) -> None:
        self.slots[slot] = None
        self.state.clear(slot)
        if not self.packed:
            return  # static batching: the slot rides along until its group finishes
        last = self.n - 1
        if slot != last:  # keep rows packed: the last active row moves into the freed slot
            self.ex.move_rows(last, slot)
            self.state.move(last, slot)
            self.slots[slot], self.slots[last] = self.slots[last], None
            self.state.clear(last)
        self.n -= 1

    def _finish(self, req: Request, reason: str) -> None:
        req.result.finish_reason = reason
        req.finished = True
        if req.on_finish is not None:
            req.on_finish(req)

    def _fail_all(self, error: str) -> None:
        """A step failed: every request still here ends with the error; the slots start empty."""
        reqs = [r.req for r in self.slots[: self.n] if r is not None] + list(self.waiting)
        self.slots = [None] * self.max_batch
        self.n = 0
        self.waiting.clear()
        for slot in range(self.max_batch):
            self.state.clear(slot)
        for req in reqs:
            req.error = error
            self._finish(req, "error")
