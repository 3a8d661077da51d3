"""Tree budget by load: aggregate tokens/s of the step-level scheduler for every (batch, budget).

The measurement behind a recipe's [schedule]. One executor, one prompt set; for each number of rows
decoding together (`--batches`) and each tree budget (`--budgets`, TOTALxDEPTH or `plain`), all
prompts are submitted at once to a scheduler capped at that many rows, so that many rows decode in
flight until the queue drains; tokens/s = generated tokens / wall seconds. `plain` is the plain
budget for speculative requests (no drafter call; the drafter catches up when drafting resumes);
`requests-plain` is requests sent with speculation off. Configurations are interleaved and
repeated (`--repeats`), medians reported, so a busy machine slows all of them alike.

    python benchmarks/bench_schedule.py [--recipe build/demo.toml] [--batches 1,2,4,8]
        [--budgets 60x5,32x4,16x3,8x2,plain] [--num-prompts 16] [--max-new-tokens 64] [--repeats 3]
        [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from griffin_trt.recipe import Limits, TreeBudget, TreeSchedule, load_recipe  # noqa: E402
from griffin_trt.runtime import SpeculativeDecoder, load_runtime  # noqa: E402


def parse_budget(text: str) -> TreeBudget:
    if text in ("plain", "requests-plain"):
        return TreeBudget(1, 1)
    total, depth = (int(x) for x in text.lower().split("x"))
    return TreeBudget(1, total, depth)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "build" / "demo.toml")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--budgets", default="60x5,32x4,16x3,8x2,plain,requests-plain")
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    budgets = args.budgets.split(",")
    recipe = load_recipe(args.recipe)
    big = Limits(max(batches), recipe.limits.max_input_len, recipe.limits.max_output_len)
    recipe = dataclasses.replace(recipe, limits=big)
    rt = load_runtime(recipe, backend=args.backend, device="cpu" if args.backend != "tensorrt" else None)
    from griffin_trt.demo.heldout import heldout_prompts

    prompts = heldout_prompts(rt.tokenizer, args.num_prompts)
    n_new = min(args.max_new_tokens, recipe.limits.max_output_len)

    def decoder(batch: int, budget: str) -> SpeculativeDecoder:
        lim = Limits(batch, recipe.limits.max_input_len, recipe.limits.max_output_len)
        return SpeculativeDecoder(rt.decoder.ex, recipe.tree, lim, rt.eos_ids, TreeSchedule((parse_budget(budget),)))

    def once(batch: int, budget: str) -> tuple[float, float]:
        dec = decoder(batch, budget)
        t0 = time.perf_counter()
        res = dec.generate(prompts, n_new, speculative=budget != "requests-plain")
        dt = time.perf_counter() - t0
        steps = sum(r.target_forwards for r in res)
        return sum(len(r.token_ids) for r in res) / dt, sum(len(r.token_ids) - 1 for r in res) / max(steps, 1)

    once(1, budgets[0])  # warm-up
    runs: dict[tuple[int, str], list[tuple[float, float]]] = {}
    total = args.repeats * len(batches) * len(budgets)
    k = 0
    for _ in range(args.repeats):
        for b in batches:
            for budget in budgets:
                runs.setdefault((b, budget), []).append(once(b, budget))
                k += 1
                print(f"\r{k}/{total}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    table = {}
    print(f"{'batch':>5}  " + "".join(f"{x:>16}" for x in budgets) + "   (tokens/s, median of "
          f"{args.repeats}; tau)")
    for b in batches:
        cells = []
        for budget in budgets:
            tps = statistics.median(r[0] for r in runs[(b, budget)])
            tau = statistics.median(r[1] for r in runs[(b, budget)])
            table[f"{b}/{budget}"] = {"tokens_per_s": tps, "tau": tau, "all": [r[0] for r in runs[(b, budget)]]}
            cells.append(f"{tps:9.1f} ({tau:4.2f})")
        print(f"{b:>5}  " + "".join(f"{c:>16}" for c in cells))
    if args.json:
        env = {"recipe": str(args.recipe), "backend": args.backend, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
               "num_prompts": len(prompts), "max_new_tokens": n_new, "repeats": args.repeats}
        args.json.write_text(json.dumps({"env": env, "results": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
