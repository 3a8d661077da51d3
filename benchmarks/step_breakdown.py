"""Where a decode step's time goes, measured around the real loop's calls (any executor).

`StepBreakdown(decoder)` wraps, on that decoder's objects only, the executor's three model calls,
the runner's tree operations and `StepRunner.decode`, and files each call's wall time under:

- `verify`: the target over the tree (T > 1) in a decode step;
- `target_1`: the target over one token (a plain step);
- `draft_pass`: a drafter pass over the frontier (before the verify);
- `draft_update`: the drafter over the accepted path (after the verify);
- `tree_ops`: frontier expansion, tree selection and acceptance;
- `kv_move`: moving the accepted entries in the target's cache;
- `host`: the rest of the decode step (Python, tensor plumbing, masks, synchronisation);

plus `prefill_target` / `prefill_drafter` outside decode steps. On CUDA every wrapped call
synchronises before and after (so each part is its own time; the overlap the loop normally has is
lost: use benchmarks/bench_cycle.py for the GPU's true cycle cost).
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict

import torch

PARTS = ("draft_pass", "tree_ops", "verify", "target_1", "draft_update", "kv_move", "host")


class StepBreakdown:
    def __init__(self, decoder):
        ex, runner = decoder.ex, decoder.scheduler.runner
        self.cuda = ex.spec.device.type == "cuda"
        self.calls: dict[str, list[float]] = defaultdict(list)  # per call, ms
        self.steps: list[dict[str, float]] = []  # per decode step, ms per part
        self.enabled = False
        self._step: dict[str, float] | None = None
        self._verified = False
        ex.target_step = self._wrap(ex.target_step, self._target_kind)
        ex.draft_step = self._wrap(ex.draft_step, self._draft_kind)
        ex.move_target_kv = self._wrap(ex.move_target_kv, lambda *a, **k: "kv_move")
        for op in ("expand", "select", "greedy_accept"):
            setattr(runner, op, self._wrap(getattr(runner, op), lambda *a, **k: "tree_ops"))
        self._decode = runner.decode
        runner.decode = self._decode_step

    def _target_kind(self, tokens, *rest, **kw) -> str:
        if self._step is None:
            return "prefill_target"
        self._verified = True
        return "verify" if tokens.shape[1] > 1 else "target_1"

    def _draft_kind(self, *args, **kw) -> str:
        if self._step is None:
            return "prefill_drafter"
        return "draft_update" if self._verified else "draft_pass"

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _wrap(self, fn, kind_of):
        def timed(*args, **kw):
            if not self.enabled:
                return fn(*args, **kw)
            kind = kind_of(*args, **kw)
            self._sync()
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            self._sync()
            ms = 1e3 * (time.perf_counter() - t0)
            self.calls[kind].append(ms)
            if self._step is not None:
                self._step[kind] += ms
            return out

        return timed

    def _decode_step(self, *args, **kw):
        if not self.enabled:
            return self._decode(*args, **kw)
        self._step, self._verified = defaultdict(float), False
        self._sync()
        t0 = time.perf_counter()
        try:
            return self._decode(*args, **kw)
        finally:
            self._sync()
            step = dict(self._step)
            step["total"] = 1e3 * (time.perf_counter() - t0)
            step["host"] = step["total"] - sum(v for k, v in step.items() if k != "total")
            self.steps.append(step)
            self._step = None

    def collect(self):
        """Record from now on, into fresh lists; returns a function that stops and summarises."""
        self.calls, self.steps, self.enabled = defaultdict(list), [], True

        def stop() -> dict:
            self.enabled = False
            return self.summary()

        return stop

    def summary(self) -> dict:
        """Mean ms per decode step of each part, and the median ms of one call of each kind."""
        n = len(self.steps)
        per_step = {p: sum(s.get(p, 0.0) for s in self.steps) / n for p in (*PARTS, "total")} if n else {}
        per_call = {k: statistics.median(v) for k, v in self.calls.items() if v}
        counts = {k: len(v) / n for k, v in self.calls.items()} if n else {}
        return {"decode_steps": n, "per_step_ms": per_step, "per_call_ms": per_call, "calls_per_step": counts}


def measure_modes(decoder, prompts: list[list[int]], new_tokens: int) -> dict[str, dict]:
    """GRIFFIN and plain decoding of `prompts` (greedy, one at a time), each broken down."""
    from griffin_trt.runtime import SamplingParams

    bd = StepBreakdown(decoder)
    out = {}
    for mode, spec in (("griffin", True), ("plain", False)):
        stop = bd.collect()
        res = [decoder.generate([p], new_tokens, SamplingParams(), speculative=spec)[0] for p in prompts]
        out[mode] = stop()
        out[mode]["tokens_per_step"] = sum(len(r.token_ids) - 1 for r in res) / max(1, sum(r.target_forwards for r in res))
    return out


def format_breakdown(name: str, s: dict, tokens_per_step: float | None = None) -> list[str]:
    """A few lines of text: ms per step by part with shares, and per-call medians."""
    ps = s.get("per_step_ms") or {}
    if not ps:
        return [f"{name}: no decode steps"]
    total = ps["total"]
    head = f"{name}: {total:.3f} ms per decode step over {s['decode_steps']} steps"
    if tokens_per_step:
        head += f" ({tokens_per_step:.2f} tokens per step, {total / tokens_per_step:.3f} ms per token)"
    parts = ", ".join(f"{p} {ps[p]:.3f} ({100 * ps[p] / total:.0f}%)" for p in PARTS if ps.get(p))
    calls = ", ".join(f"{k} {v:.3f} x{s['calls_per_step'].get(k, 0):.1f}" for k, v in sorted(s["per_call_ms"].items()))
    return [head, f"  per step: {parts}", f"  per call (median ms x calls per step): {calls}"]


def main(argv: list[str] | None = None) -> int:
    """Breakdown of any checkout's loop (its own `griffin_trt`), e.g. before and after a change:

        python benchmarks/step_breakdown.py --checkout /tmp/old --backend onnxruntime --build-dir engines/demo \
            --prompts griffin_trt/client/prompts.jsonl --category code
    """
    import argparse
    import json
    import sys
    from pathlib import Path

    ap = argparse.ArgumentParser(description="where a decode step's time goes, per mode")
    ap.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--recipe", type=Path, default=None, help="default: the checkout's build/demo.toml")
    ap.add_argument("--backend", default="onnxruntime", choices=("torch", "onnxruntime", "tensorrt"))
    ap.add_argument("--build-dir", type=Path, default=None)
    ap.add_argument("--prompts", type=Path, required=True, help="a .jsonl with prompt (and category)")
    ap.add_argument("--category", default=None)
    ap.add_argument("--num-prompts", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.checkout.resolve()))
    from griffin_trt.recipe import load_recipe
    from griffin_trt.runtime import SamplingParams, load_runtime

    recipe = load_recipe(args.recipe or args.checkout / "build" / "demo.toml")
    rt = load_runtime(recipe, build_dir=args.build_dir, backend=args.backend)
    rows = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    prompts = [rt.encode(r["prompt"]) for r in rows if args.category in (None, r.get("category"))][: args.num_prompts]
    n_new = min(args.max_new_tokens, recipe.limits.max_output_len)
    for p in prompts[:2]:  # warm-up
        for spec in (True, False):
            rt.decoder.generate([p], 8, SamplingParams(), speculative=spec)
    out = measure_modes(rt.decoder, prompts, n_new)
    for mode, part in out.items():
        print("\n".join(format_breakdown(f"{mode} ({args.checkout})", part, part["tokens_per_step"])), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
