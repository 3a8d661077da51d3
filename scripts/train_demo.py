#!/usr/bin/env python
"""Make the embedded demo pair from scratch, on CPU, in one command:

    python scripts/train_demo.py                 # writes griffin_trt/demo/{target,drafter}/ + README.md
    python scripts/train_demo.py --quick --out /tmp/demo   # seconds-long smoke run (tests)

1. corpus: this Python's standard-library sources (every machine has them), the files of
   griffin_trt/demo/heldout.py held out; a byte-level BPE tokenizer trained on it;
2. target: a 12-layer LLaMA pre-trained in bfloat16 (float32 master weights), the last steps with
   sequence-level unlikelihood against repeated 4-grams in its own greedy output; saved as a
   Hugging Face checkpoint in float16 and used from then on exactly as stored;
3. drafter: `griffin-trt train` (griffin_trt.training) on the target's own continuations of corpus
   windows: GRIFFIN's stage 1, then the token-alignable 2- and 3-pass stages;
4. evaluation on the held-out prompts through the real runtime: tau with GRIFFIN's default tree,
   the distinct-4-gram ratio of the target's greedy 64-token continuations, and what one target
   step costs on this CPU. Results and timings go into README.md.

Deterministic: fixed seeds, thread count and deterministic algorithms; the same Python and torch
versions on the same machine reproduce the same files (README.md also holds wall times). Every
phase checkpoints into --work, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# Passive OpenMP waiting: spinning threads cost a lot when the 2 cores are shared with other work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from griffin_trt.demo.make.lm import LMShape  # noqa: E402
from griffin_trt.demo.make.pretrain import PretrainSettings  # noqa: E402


@dataclass
class DemoSettings:
    seed: int = 1234
    max_file_chars: int = 150_000  # huge generated tables teach little
    max_chars: int | None = None  # corpus cap (the quick run's)
    vocab_size: int = 2048
    target: LMShape = field(default_factory=lambda: LMShape(
        vocab_size=2048, hidden_size=384, num_layers=12, num_heads=6, num_kv_heads=2, intermediate_size=1024))
    pretrain: PretrainSettings = field(default_factory=lambda: PretrainSettings(
        seq_len=256, batch=8, steps=1200, lr=2.5e-3, warmup=60, final_lr=0.05, weight_decay=0.1, grad_clip=1.0,
        seed=1234, ul_steps=120, ul_weight=1.0, ul_batch=8, ul_prompt=64, ul_new=64))
    # drafter: arguments of `griffin-trt train`
    drafter: dict = field(default_factory=lambda: dict(
        num_prompts=2048 + 16, prompt_tokens=64, new_tokens=128, prompt_loss=True, gen_batch=64, shard_size=256,
        feature_dtype="float16", intermediate_size=768, passes=(1, 2, 3), epochs=(3.0, 0.5, 0.3),
        lr=(3e-3, 1e-3, 1e-3), batch_size=8, eval_prompts=16, eval_new_tokens=64, save_dtype="float16",
        weights_format="safetensors", checkpoint_every=50))
    # evaluation on griffin_trt/demo/heldout.py
    eval_prompts: int = 20
    eval_new_tokens: int = 128
    distinct_tokens: int = 64


def quick_settings() -> DemoSettings:
    s = DemoSettings(vocab_size=384, max_chars=300_000)
    s.target = LMShape(vocab_size=384, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)
    s.pretrain = replace(s.pretrain, seq_len=64, batch=4, steps=12, warmup=2, ul_steps=2, ul_batch=2, ul_prompt=16,
                         ul_new=8, checkpoint_every=5)
    s.drafter.update(num_prompts=24 + 4, prompt_tokens=16, new_tokens=16, gen_batch=8, shard_size=8,
                     intermediate_size=96, epochs=(1.0, 0.5, 0.5), eval_prompts=4, eval_new_tokens=8, checkpoint_every=5)
    s.eval_prompts, s.eval_new_tokens, s.distinct_tokens = 4, 16, 16
    return s


def log(msg: str) -> None:
    print(msg, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "griffin_trt" / "demo", help="where target/, drafter/ and README.md go")
    ap.add_argument("--work", type=Path, default=REPO / "out" / "demo-work",
                    help="checkpoints and cached data; a rerun resumes from them (default: out/demo-work)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds-long smoke run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)

    s = quick_settings() if args.quick else DemoSettings()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(s.seed)
    out: Path = args.out
    work: Path = args.work
    tdir, ddir = out / "target", out / "drafter"
    times: dict[str, float] = {}
    t0 = time.time()

    from griffin_trt.demo.make.corpus import training_texts
    from griffin_trt.demo.make.export import save_target
    from griffin_trt.demo.make.pretrain import pretrain
    from griffin_trt.demo.make.tokenizer import BOS_ID, EOS_ID, train_tokenizer

    # 1. corpus + tokenizer
    names, texts = training_texts(s.max_file_chars, s.max_chars)
    raw, hf_tok = train_tokenizer(texts, s.vocab_size, s.target.max_positions)
    stream = torch.cat([torch.tensor([BOS_ID] + e.ids + [EOS_ID]) for e in raw.encode_batch(texts)])
    times["corpus + tokenizer"] = time.time() - t0
    log(f"corpus: {len(names)} files, {sum(map(len, texts)) / 1e6:.2f} M chars, {stream.numel() / 1e6:.2f} M tokens "
        f"({times['corpus + tokenizer']:.0f} s)")

    # 2. target
    t1 = time.time()
    model = pretrain(s.target, stream, s.pretrain, work, progress=not args.quiet)
    save_target(model, hf_tok, tdir)
    del model
    times["target pre-training"] = time.time() - t1
    log(f"target: {s.target.num_params() / 1e6:.1f} M parameters -> {tdir} ({times['target pre-training']:.0f} s)")

    # 3. drafter, with the project's trainer (what `griffin-trt train` runs)
    from griffin_trt.demo.make.corpus import stdlib_root
    from griffin_trt.training import TrainConfig, train

    t2 = time.time()
    root = stdlib_root()
    cfg = TrainConfig(target=tdir, corpus=tuple(root / n for n in names), out=ddir, work_dir=work / "drafter",
                      seed=s.seed, threads=args.threads, quiet=args.quiet, **s.drafter)
    report = train(cfg)
    times["drafter (griffin-trt train)"] = time.time() - t2

    # 4. evaluation on the held-out files, through the runtime, with the files as written
    from griffin_trt.demo.heldout import heldout_prompts
    from griffin_trt.demo.make.metrics import distinct_ngram_ratio, weight_traffic
    from griffin_trt.models import load_target, load_tokenizer
    from griffin_trt.training.evaluate import measure_tau

    t3 = time.time()
    tok = load_tokenizer(tdir)
    prompts = heldout_prompts(tok, n=s.eval_prompts)
    ev = measure_tau(tdir, ddir, prompts, s.eval_new_tokens, (10, 5, 60), progress=not args.quiet)
    distinct = [distinct_ngram_ratio(o[: s.distinct_tokens]) for o in ev.pop("outputs")]
    cost = weight_traffic(load_target(tdir))
    times["evaluation"] = time.time() - t3
    minutes = (time.time() - t0) / 60
    info = {
        "settings": asdict(s), "threads": args.threads, "minutes": minutes, "times_s": times,
        "torch": torch.__version__.split("+")[0], "python": platform.python_version(), "cpu": platform.processor(),
        "corpus_files": len(names), "corpus_chars": sum(map(len, texts)), "corpus_tokens": stream.numel(),
        "target_params": s.target.num_params(), "drafter_train": {k: v for k, v in report.items() if k != "settings"},
        "eval": ev, "distinct_4gram_mean": sum(distinct) / len(distinct), "distinct_4gram": distinct, "step_cost": cost,
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                  for p in sorted(list(tdir.iterdir()) + list(ddir.iterdir()))},
    }
    (work / "demo-report.json").write_text(json.dumps(info, indent=1) + "\n")
    from griffin_trt.demo.make.readme import write_readme

    write_readme(out / "README.md", info, quick=args.quick)
    log(f"\ndone in {minutes:.1f} min -> {out}")
    log(f"  tau (default tree, {len(prompts)} held-out prompts): {ev['mean_tau']:.2f}; distinct-4-gram of "
        f"{s.distinct_tokens}-token greedy continuations: {info['distinct_4gram_mean']:.3f}")
    log(f"  one-token target step {cost['step_ms']:.1f} ms, of which weight traffic ~{100 * cost['weight_share']:.0f}%")
    return info


if __name__ == "__main__":
    main()
