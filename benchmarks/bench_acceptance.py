"""Acceptance length (tau) of a pair on a prompt set: overall, per category, per draft depth, for
one or more trees and temperatures, through the real decoding loop (torch executor).

tau = tokens emitted by decode steps / target forwards after prefill (the bonus token included),
summed over the prompts. At temperature 0 every output is also compared with plain decoding of
the same prompt (it must be identical); at temperature > 0 each prompt gets its own seed.

    python benchmarks/bench_acceptance.py --recipe build/smollm2-135m.toml \\
        --prompts benchmarks/prompts/chat_heldout.jsonl --chat --trees 10,5,60 1,5,6 --temperatures 0 1 \\
        [--num-prompts 88] [--max-new-tokens 128] [--json out.json]

`--chat` wraps each prompt in the tokenizer's chat template (a user turn), as a chat client would.
No timing here: ratios of tokens per second come from bench_speculative.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_speculative import parse_tree  # noqa: E402

from griffin_trt.recipe import TreeConfig, load_recipe  # noqa: E402
from griffin_trt.runtime import SamplingParams, SpeculativeDecoder, load_runtime  # noqa: E402


def chat_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def read_prompts(path: Path, tokenizer, chat: bool, n: int | None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()][:n]
    return [{"id": r.get("id", str(i)), "category": r.get("category", "all"),
             "ids": chat_ids(tokenizer, r["prompt"]) if chat else tokenizer.encode(r["prompt"], add_special_tokens=True)}
            for i, r in enumerate(rows)]


def summarize(results: list, categories: list[str], depth: int) -> dict:
    """tau overall and per category, and the share of steps whose draft depth d was accepted."""
    def agg(sel):
        forwards = sum(r.target_forwards for r in sel)
        emitted = sum(len(r.token_ids) - 1 for r in sel)  # the first token comes from prefill
        accepted = [sum(r.accepted_per_position[d] for r in sel if d < len(r.accepted_per_position))
                    for d in range(depth + 1)]
        return {"prompts": len(sel), "tau": emitted / forwards if forwards else 0.0, "target_forwards": forwards,
                "tokens": emitted + len(sel), "accept_rate_by_depth": [a / forwards if forwards else 0.0 for a in accepted]}

    out = {c: agg([r for r, cat in zip(results, categories) if cat == c]) for c in sorted(set(categories))}
    out["all"] = agg(results)
    return out


def run(rt, recipe, trees: list[TreeConfig], temperatures: list[float], prompts: list[dict], n_new: int,
        seed: int, batch: int, progress: bool = True) -> dict:
    cats = [p["category"] for p in prompts]
    ids = [p["ids"] for p in prompts]
    plain = None
    if 0.0 in temperatures:
        plain = _decode(rt.decoder, ids, n_new, [SamplingParams()] * len(ids), False, batch, "plain", progress)
    report = {}
    for tree in trees:
        dec = SpeculativeDecoder(rt.decoder.ex, tree, recipe.limits, rt.eos_ids)
        for temp in temperatures:
            sampling = [SamplingParams(temperature=temp, seed=seed + i) if temp > 0 else SamplingParams()
                        for i in range(len(ids))]
            key = f"tree={tree.top_k},{tree.depth},{tree.total_tokens} temperature={temp:g}"
            res = _decode(dec, ids, n_new, sampling, True, batch, key, progress)
            entry = summarize(res, cats, tree.depth)
            entry["per_prompt_tau"] = {p["id"]: round(r.acceptance_length, 4) for p, r in zip(prompts, res)}
            if temp == 0.0:
                entry["identical_to_plain"] = sum(r.token_ids == q.token_ids for r, q in zip(res, plain))
            report[key] = entry
    return report


def _decode(dec, ids, n_new, sampling, speculative, batch, label, progress):
    out = []
    for i in tqdm(range(0, len(ids), batch), desc=label, unit="batch", disable=not progress, dynamic_ncols=True):
        out += dec.generate(ids[i : i + batch], n_new, sampling[i : i + batch], speculative=speculative)
    return out


def format_report(report: dict) -> list[str]:
    lines = []
    for key, entry in report.items():
        same = entry.get("identical_to_plain")
        lines.append(f"{key}: tau {entry['all']['tau']:.2f}"
                     + (f", identical to plain {same}/{entry['all']['prompts']}" if same is not None else ""))
        lines.append("  per depth: " + ", ".join(f"{a:.2f}" for a in entry["all"]["accept_rate_by_depth"]))
        lines.append("  " + ", ".join(f"{c} {e['tau']:.2f}" for c, e in entry.items()
                                     if isinstance(e, dict) and "tau" in e and c != "all"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "build" / "demo.toml")
    ap.add_argument("--drafter", type=Path, default=None, help="another drafter folder than the recipe's")
    ap.add_argument("--prompts", type=Path, required=True, help=".jsonl with prompt (and category, id)")
    ap.add_argument("--chat", action="store_true", help="wrap prompts in the chat template (a user turn)")
    ap.add_argument("--num-prompts", type=int, default=None)
    ap.add_argument("--trees", nargs="+", default=["10,5,60"], metavar="K,DEPTH,TOTAL")
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.0])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=None, help="prompts decoded together (default: the recipe's max_batch)")
    ap.add_argument("--seed", type=int, default=0, help="first sampling seed (prompt i gets seed + i)")
    ap.add_argument("--draft-vocab", type=int, default=None, metavar="N",
                    help="draft among the N most frequent ids of the drafter's token_counts.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    trees = [parse_tree(t) for t in args.trees]
    recipe = load_recipe(args.recipe)
    drafter = (args.drafter or recipe.drafter).resolve()
    # Size the drafter's top-k and the caches for every tree asked for; no schedule: each tree runs whole.
    recipe = dataclasses.replace(recipe, drafter=drafter, tree=TreeConfig(
        top_k=max(t.top_k for t in trees), depth=max(t.depth for t in trees),
        total_tokens=max(t.total_tokens for t in trees)))
    if args.draft_vocab is not None:
        recipe = dataclasses.replace(recipe, draft_vocab=args.draft_vocab, token_counts=drafter / "token_counts.json")
    elif recipe.draft_vocab is not None and args.drafter is not None:
        recipe = dataclasses.replace(recipe, token_counts=drafter / "token_counts.json")
    rt = load_runtime(recipe, backend="torch")
    prompts = read_prompts(args.prompts, rt.tokenizer, args.chat, args.num_prompts)
    n_new = min(args.max_new_tokens, recipe.limits.max_output_len)
    report = run(rt, recipe, trees, args.temperatures, prompts, n_new, args.seed,
                 args.batch or recipe.limits.max_batch)
    print("\n".join(format_report(report)))
    if args.json:
        env = {"recipe": str(args.recipe), "drafter": str(drafter), "prompts": str(args.prompts), "chat": args.chat,
               "max_new_tokens": n_new, "draft_vocab": recipe.draft_vocab, "threads": torch.get_num_threads(),
               "torch": torch.__version__}
        args.json.write_text(json.dumps({"env": env, "results": report}, indent=1) + "\n")
    return 0 if all(e.get("identical_to_plain", e["all"]["prompts"]) == e["all"]["prompts"] for e in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
