"""GRIFFIN speculative decoding over an executor: prefill, draft a tree, verify it in one target
forward, accept, repeat (runtime/steps.py), for many requests at once (runtime/scheduler.py).

`SpeculativeDecoder` checks that the executor's caches fit the tree and limits, owns the step-level
`scheduler` that the Triton model drives from its own thread, and offers `generate` for a batch of
prompts (the CLI and tests): a thin client that submits one request per prompt and steps the same
scheduler until they have finished.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..recipe import Limits, TreeConfig
from .executors.base import Executor
from .results import GenerationResult, SamplingParams
from .scheduler import Request, Scheduler

TokenCallback = Callable[[int, list[int]], None]


class SpeculativeDecoder:
    def __init__(self, executor: Executor, tree: TreeConfig, limits: Limits, *scheduler_args, **scheduler_kwargs):
        """`scheduler_args`/`scheduler_kwargs`: the rest of `Scheduler`'s arguments (eos_ids, schedule, ...)."""
        spec = executor.spec
        need_k = max(c[-1] for c in tree.choices) + 1 if tree.choices else tree.top_k
        if spec.top_k < need_k:
            raise ValueError(f"the drafter returns top-{spec.top_k} candidates but the tree needs {need_k}")
        if spec.target_kv_len < limits.max_seq_len + tree.tree_size:
            raise ValueError(
                f"target cache holds {spec.target_kv_len} slots; the limits need "
                f"{limits.max_seq_len} + {tree.tree_size} (tree)"
            )
        if spec.drafter_kv_len < limits.max_seq_len + tree.max_accept + tree.drafter_slots:
            raise ValueError(f"drafter cache of {spec.drafter_kv_len} slots is too small for these limits and tree")
        self.ex, self.tree, self.limits = executor, tree, limits
        self.scheduler = Scheduler(executor, tree, limits, *scheduler_args, **scheduler_kwargs)

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.scheduler.eos_ids

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
        speculative: bool = True,
        stop_ids: Iterable[int] | None = None,
        on_tokens: TokenCallback | None = None,
        arrival_time_ns: int | None = None,
        stop_strings: Sequence[str] = (),
    ) -> list[GenerationResult]:
        """Generate for token-id prompts; `on_tokens(i, ids)` streams prompt i's tokens as accepted.

        `sampling` is one setting for every prompt (the same seed for each: a repeated prompt gives
        repeated text) or one per prompt. Any number of prompts: beyond max_batch they queue.
        """
        if not prompts:
            raise ValueError("no prompts given")
        if sampling is None or isinstance(sampling, SamplingParams):
            samplings = [sampling or SamplingParams()] * len(prompts)
        else:
            samplings = list(sampling)
            if len(samplings) != len(prompts):
                raise ValueError(f"{len(samplings)} sampling settings for {len(prompts)} prompts")
        stops = frozenset(int(s) for s in (stop_ids or ()))
        reqs = []
        for i, (p, sp) in enumerate(zip(prompts, samplings)):
            req = Request(
                [int(t) for t in p], max_new_tokens, sp, speculative, stops, tuple(stop_strings),
                on_tokens=(lambda ids, i=i: on_tokens(i, ids)) if on_tokens else None,
                arrival_time_ns=arrival_time_ns or 0,
            )
            try:
                self.scheduler.check(req)
            except ValueError as e:
                raise ValueError(f"prompt {i}: {e}") from None
            reqs.append(req)
        for req in reqs:
            self.scheduler.submit(req)
        while not all(r.finished for r in reqs):
            self.scheduler.step()
        return [r.result for r in reqs]
