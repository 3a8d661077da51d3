"""griffin_trt/demo/README.md, written from the run's own numbers."""
from __future__ import annotations

from pathlib import Path


def write_readme(path: Path, info: dict, quick: bool) -> None:
    s = info["settings"]
    t, pt, d = s["target"], s["pretrain"], s["drafter"]
    ev, cost, dt = info["eval"], info["step_cost"], info["drafter_train"]
    stages = "; ".join(
        f"stage {st['stage']} ({st['passes']} pass{'es' if st['passes'] > 1 else ''}, {st['steps']} steps): "
        f"loss {st['loss']:.3f}, top-1 vs target {st['top1']:.3f}" for st in dt.get("stages", []))
    times = ", ".join(f"{k} {v / 60:.1f} min" for k, v in info["times_s"].items())
    files = "\n".join(f"| `{name}` | {f['bytes'] / 1e6:.2f} MB | `{f['sha256'][:16]}…` |" for name, f in info["files"].items())
    steps_by_t = ", ".join(f"T={k}: {v:.1f} ms" for k, v in cost["step_ms_by_tokens"].items())
    made_by = "`python scripts/train_demo.py --quick`" if quick else "`make demo-pair` (`python scripts/train_demo.py`)"
    text = f"""# The embedded demo pair

Made by {made_by} on CPU ({info['threads']} threads, {info['cpu'] or 'x86_64'},
torch {info['torch']}, Python {info['python']}): **{info['minutes']:.1f} min** wall clock ({times}).
Deterministic: the same command on the same machine and versions writes the same files (SHA-256 below).

- **Corpus**: the Python {info['python']} standard library's own `.py` sources (test folders skipped, files
  over {s['max_file_chars'] // 1000} k characters skipped): {info['corpus_files']} files, {info['corpus_chars'] / 1e6:.1f} M characters,
  {info['corpus_tokens'] / 1e6:.2f} M tokens. Held out for evaluation: the files in `heldout.py`.
- **Tokenizer**: byte-level BPE (`tokenizers`), vocab {s['vocab_size']}, `<s>`=0 (BOS), `</s>`=1 (EOS), `<pad>`=2, minimal chat template.
- **Target**: LLaMA, hidden {t['hidden_size']}, **{t['num_layers']} layers**, {t['num_heads']} heads / {t['num_kv_heads']} KV heads,
  intermediate {t['intermediate_size']}: {info['target_params'] / 1e6:.1f} M parameters ({cost['weights_mb_fp32']:.0f} MB in float32 at run time,
  above this CPU's 32 MB L3). Pre-trained in bfloat16 with float32 master weights (AdamW, peak lr {pt['lr']}, cosine,
  {pt['steps']} steps x {pt['batch']} x {pt['seq_len']} tokens = {pt['steps'] * pt['batch'] * pt['seq_len'] / 1e6:.2f} M tokens); the last {pt['ul_steps']} steps add
  sequence-level unlikelihood (Welleck et al. 2019) against tokens that repeat a 4-gram in its own greedy output.
- **Drafter**: GRIFFIN, trained by `griffin-trt train` (griffin_trt.training) with intermediate {d['intermediate_size']}
  on the target's greedy continuations ({d['new_tokens']} tokens) of {d['num_prompts'] - d['eval_prompts']} corpus windows
  ({d['prompt_tokens']} tokens): {stages}.
- **Files** (float16 safetensors; the loaders upcast):

| file | size | SHA-256 |
|---|---|---|
{files}

## What it reaches (held-out prompts, `heldout.py`, greedy)

- **tau {ev['mean_tau']:.2f}** tokens per target forward with GRIFFIN's default tree (top_k 10, depth 5, total_tokens 60),
  {ev['prompts']} prompts x {ev['new_tokens']} new tokens, through the real runtime (`griffin_trt.runtime`);
  per-depth acceptance {', '.join(f'{a:.2f}' for a in ev['accept_rate_by_depth'])}.
- **distinct-4-gram ratio {info['distinct_4gram_mean']:.3f}** of the target's {s['distinct_tokens']}-token greedy continuations (1.0: no
  4-gram repeats; looping output drives it towards 0).
- **One target step** on this CPU (the runtime's static-cache forward, context 128): {steps_by_t}. A copy
  shrunk to head size 16 (same layers, heads and ops; weights in cache) takes {cost['overhead_ms']:.1f} ms, so about
  {100 * cost['weight_share']:.0f}% of a one-token step is weight traffic rather than per-op overhead.
"""
    path.write_text(text)
