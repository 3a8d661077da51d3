"""GRIFFIN vs plain decoding, same model, same prompts, one run (no server in the way).

For every prompt both modes run back to back through the same executor and caches; the script
prints per-category and overall tokens/s, their ratio, the acceptance length (tokens per target
forward), and whether the greedy outputs were identical (they must be).

    python benchmarks/bench_speculative.py --recipe build/demo.toml [--backend torch|onnxruntime]
        [--prompts demo-heldout|PATH.jsonl] [--num-prompts 20] [--max-new-tokens 128] [--json out.json]
        [--threads N] [--tree K,DEPTH,TOTAL] [--draft-vocab N [--token-counts TABLE.json]]
    python benchmarks/bench_speculative.py --sweep 10,5,60 6,5,20 4,4,12 ...   # choose a recipe's tree

`--sweep` decodes every prompt plainly once and with each tree, side by side in one run, and ranks
the trees by GRIFFIN/plain tokens-per-second ratio (how the demo recipe's tree was chosen).

`--draft-vocab N` drafts among the N most frequent ids of the token-counts table (default: the demo
pair's, griffin_trt/demo/token_counts.json).

After the timed run, the first `--breakdown-prompts` prompts run once more in each mode with every
model call, tree op and KV move timed (benchmarks/step_breakdown.py): the summary's `breakdown`
says where a decode step's time goes, and `draft_pass_ms` is the median drafter pass over the
k-node frontier. The timed run itself carries no timers.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEMO_TOKEN_COUNTS = REPO / "griffin_trt" / "demo" / "token_counts.json"

sys.path.insert(0, str(REPO / "benchmarks"))

from step_breakdown import format_breakdown, measure_modes  # noqa: E402

from griffin_trt.recipe import TreeConfig, load_recipe  # noqa: E402
from griffin_trt.runtime import SamplingParams, SpeculativeDecoder, load_runtime  # noqa: E402


def load_prompts(spec: str, runtime, n: int) -> list[dict]:
    if spec == "demo-heldout":
        from griffin_trt.demo.heldout import heldout_prompts

        return [{"category": "code", "ids": ids} for ids in heldout_prompts(runtime.tokenizer, n)]
    rows = [json.loads(line) for line in Path(spec).read_text().splitlines() if line.strip()]
    return [{"category": r.get("category", "all"), "ids": runtime.encode(r["prompt"])} for r in rows[:n]]


def parse_tree(text: str) -> TreeConfig:
    k, depth, total = (int(x) for x in text.split(","))
    return TreeConfig(top_k=k, depth=depth, total_tokens=total)


def sweep(rt, recipe, trees: list[TreeConfig], prompts: list[dict], args) -> int:
    """Per prompt: plain once, then every tree (same executor, caches, prompts); rank the trees."""
    decoders = [SpeculativeDecoder(rt.decoder.ex, t, recipe.limits, rt.eos_ids) for t in trees]
    greedy = SamplingParams()
    n_new = min(args.max_new_tokens, recipe.limits.max_output_len)
    for p in prompts[: args.warmup]:
        for dec in [rt.decoder, *decoders]:
            dec.generate([p["ids"]], 8, greedy, speculative=dec is not rt.decoder)
    plain = {"tokens": 0, "seconds": 0.0}
    stats = [{"tokens": 0, "seconds": 0.0, "forwards": 0, "identical": 0} for _ in trees]
    for p in tqdm(prompts, desc="prompts", unit="prompt"):
        t0 = time.perf_counter()
        ref = rt.decoder.generate([p["ids"]], n_new, greedy, speculative=False)[0]
        plain["seconds"] += time.perf_counter() - t0
        plain["tokens"] += len(ref.token_ids)
        for dec, st in zip(decoders, stats):
            t0 = time.perf_counter()
            r = dec.generate([p["ids"]], n_new, greedy, speculative=True)[0]
            st["seconds"] += time.perf_counter() - t0
            st["tokens"] += len(r.token_ids)
            st["forwards"] += r.target_forwards
            st["identical"] += r.token_ids == ref.token_ids
    plain_tok_s = plain["tokens"] / plain["seconds"]
    rows = []
    for t, st in zip(trees, stats):
        tok_s = st["tokens"] / st["seconds"]
        rows.append({"tree": f"{t.top_k},{t.depth},{t.total_tokens}", "griffin_tok_s": tok_s, "speedup": tok_s / plain_tok_s,
                     "acceptance_length": (st["tokens"] - len(prompts)) / st["forwards"], "identical": st["identical"]})
    rows.sort(key=lambda r: -r["speedup"])
    print(f"\nplain: {plain_tok_s:.1f} tok/s over {len(prompts)} prompts x {n_new} tokens, {torch.get_num_threads()} threads")
    print(f"{'tree (k,depth,total)':<22}{'GRIFFIN tok/s':>15}{'ratio':>8}{'tau':>7}{'same':>7}")
    for r in rows:
        print(f"{r['tree']:<22}{r['griffin_tok_s']:>15.1f}{r['speedup']:>8.2f}{r['acceptance_length']:>7.2f}"
              f"{r['identical']:>4}/{len(prompts)}")
    if args.json:
        env = {"recipe": str(args.recipe), "backend": args.backend, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "max_new_tokens": n_new}
        args.json.write_text(json.dumps({"env": env, "plain_tok_s": plain_tok_s, "trees": rows}, indent=1))
    return 0 if all(r["identical"] == len(prompts) for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "build" / "demo.toml")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    ap.add_argument("--build-dir", type=Path, default=None)
    ap.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    ap.add_argument("--prompts", default="demo-heldout", help="demo-heldout or a .jsonl with prompt/category")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tree", default=None, metavar="K,DEPTH,TOTAL",
                    help="another dynamic tree, e.g. 10,5,60 (torch sizes the drafter for it; a built back end needs "
                         "top_k <= the build's)")
    ap.add_argument("--sweep", nargs="+", default=None, metavar="K,DEPTH,TOTAL",
                    help="trees to compare side by side (instead of --tree)")
    ap.add_argument("--draft-vocab", type=int, default=None, metavar="N",
                    help="draft among the N most frequent ids of --token-counts (torch back end)")
    ap.add_argument("--token-counts", type=Path, default=DEMO_TOKEN_COUNTS)
    ap.add_argument("--ort-thread-pool", choices=("shared", "per-session"), default=None,
                    help="onnxruntime: one thread pool for both graphs (the default) or one per session (the old way)")
    ap.add_argument("--breakdown-prompts", type=int, default=5, help="prompts of the per-part timing run (0: none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    if args.draft_vocab is not None:
        recipe = dataclasses.replace(recipe, draft_vocab=args.draft_vocab, token_counts=args.token_counts.resolve())
    trees = [parse_tree(t) for t in (args.sweep or ([args.tree] if args.tree else []))]
    if trees and args.backend == "torch":  # size the drafter's top-k and the caches for every tree asked for
        recipe = dataclasses.replace(recipe, tree=TreeConfig(
            top_k=max(t.top_k for t in trees), depth=max(t.depth for t in trees),
            total_tokens=max(t.total_tokens for t in trees)))
    options = {"thread_pool": args.ort_thread_pool} if args.ort_thread_pool else None
    rt = load_runtime(recipe, build_dir=args.build_dir, backend=args.backend, device=args.device, executor_options=options)
    tree = recipe.tree
    if args.tree:
        tree = trees[0]
        rt.decoder = SpeculativeDecoder(rt.decoder.ex, tree, recipe.limits, rt.eos_ids)
    prompts = load_prompts(args.prompts, rt, args.num_prompts)
    if args.sweep:
        return sweep(rt, recipe, trees, prompts, args)
    greedy = SamplingParams()
    n_new = min(args.max_new_tokens, recipe.limits.max_output_len)
    for p in prompts[: args.warmup]:
        for spec in (True, False):
            rt.decoder.generate([p["ids"]], 8, greedy, speculative=spec)

    rows = []
    for p in tqdm(prompts, desc="prompts", unit="prompt"):
        row = {"category": p["category"], "prompt_tokens": len(p["ids"])}
        for mode, spec in (("griffin", True), ("plain", False)):
            t0 = time.perf_counter()
            r = rt.decoder.generate([p["ids"]], n_new, greedy, speculative=spec)[0]
            dt = time.perf_counter() - t0
            row[mode] = {
                "tokens": len(r.token_ids),
                "seconds": dt,
                "tokens_per_s": len(r.token_ids) / dt,
                "acceptance_length": r.acceptance_length,
                "target_forwards": r.target_forwards,
                "draft_s": r.draft_time_s,
                "verify_s": r.verify_time_s,
                "ids": r.token_ids,
            }
        row["identical"] = row["griffin"]["ids"] == row["plain"]["ids"]
        rows.append(row)

    def agg(sel: list[dict]) -> dict:
        g = sum(r["griffin"]["tokens"] for r in sel) / sum(r["griffin"]["seconds"] for r in sel)
        pl = sum(r["plain"]["tokens"] for r in sel) / sum(r["plain"]["seconds"] for r in sel)
        fwd = sum(r["griffin"]["target_forwards"] for r in sel)
        emitted = sum(r["griffin"]["tokens"] - 1 for r in sel)  # the first token comes from prefill
        draft = sum(r["griffin"]["draft_s"] for r in sel)
        verify = sum(r["griffin"]["verify_s"] for r in sel)
        return {
            "prompts": len(sel),
            "griffin_tok_s": g,
            "plain_tok_s": pl,
            "speedup": g / pl,
            "acceptance_length": emitted / fwd if fwd else 0.0,
            "acceptance_length_median": statistics.median(r["griffin"]["acceptance_length"] for r in sel),
            "draft_share": draft / (draft + verify) if draft + verify else 0.0,
            "identical": sum(r["identical"] for r in sel),
        }

    cats = sorted({r["category"] for r in rows})
    summary = {c: agg([r for r in rows if r["category"] == c]) for c in cats}
    summary["all"] = agg(rows)
    parts = measure_modes(rt.decoder, [p["ids"] for p in prompts[: args.breakdown_prompts]], n_new)
    summary["all"]["breakdown"] = parts
    summary["all"]["draft_pass_ms"] = parts["griffin"]["per_call_ms"].get("draft_pass")
    env = {
        "recipe": str(args.recipe),
        "backend": args.backend,
        "device": str(rt.decoder.ex.spec.device),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "max_new_tokens": n_new,
        "tree": tree.__dict__,
        "draft_vocab": recipe.draft_vocab,
        "executor_options": options,
        "vocab_size": rt.decoder.ex.spec.vocab_size,
        "python": platform.python_version(),
        # held-out prompts come from the running Python's stdlib: say which ones were used
        "prompts_sha256": hashlib.sha256(json.dumps([p["ids"] for p in prompts]).encode()).hexdigest()[:16],
    }
    print(f"\n{env}")
    for mode, part in parts.items():
        print("\n".join(format_breakdown(mode, part, part["tokens_per_step"])))
    print(f"{'category':<14}{'n':>4}{'plain tok/s':>13}{'GRIFFIN tok/s':>15}{'ratio':>8}{'tau':>7}{'draft%':>8}{'same':>7}")
    for c, s in summary.items():
        print(
            f"{c:<14}{s['prompts']:>4}{s['plain_tok_s']:>13.1f}{s['griffin_tok_s']:>15.1f}{s['speedup']:>8.2f}"
            f"{s['acceptance_length']:>7.2f}{100 * s['draft_share']:>7.0f}%{s['identical']:>4}/{s['prompts']}"
        )
    if args.json:
        for r in rows:
            for mode in ("griffin", "plain"):
                r[mode].pop("ids")
        args.json.write_text(json.dumps({"env": env, "summary": summary, "rows": rows}, indent=1))
    return 0 if summary["all"]["identical"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
