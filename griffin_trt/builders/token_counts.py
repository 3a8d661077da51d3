"""`griffin-trt draft-vocab`: the token-frequency table a reduced draft vocabulary is chosen from.

Counts come from a text corpus the user names (files or folders, tokenized with the recipe's
tokenizer), from the target's own greedy generations on a prompt set, or both added together. The
table covers the target's whole vocabulary; the recipe then says how many of the most frequent ids
the drafter drafts among (`[model] draft_vocab`, `token_counts`), see griffin_trt/models/draft_vocab.py.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parents[1] / "client" / "prompts.jsonl"
COVERAGE_SIZES = (256, 512, 1024, 4096, 16384, 32768, 65536)


def corpus_files(paths: list[Path], glob: str, exclude: list[str]) -> list[Path]:
    """Files named, and the files under folders named that match `glob`, minus `exclude` patterns
    (matched against the path relative to the folder and against the file name)."""
    out = []
    for p in paths:
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for f in sorted(p.rglob(glob)):
                rel = f.relative_to(p).as_posix()
                if f.is_file() and not any(fnmatch.fnmatch(rel, x) or fnmatch.fnmatch(f.name, x) for x in exclude):
                    out.append(f)
        else:
            raise FileNotFoundError(f"corpus path {p} does not exist")
    if not out:
        raise ValueError(f"no corpus files found under {', '.join(map(str, paths))} (glob {glob!r})")
    return out


def count_corpus(tokenizer, files: list[Path], vocab_size: int, progress: bool = True) -> list[int]:
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # whole files exceed model_max_length: only counted, never run
    counts = [0] * vocab_size
    for f in tqdm(files, desc="corpus", unit="file", disable=not progress, file=sys.stderr):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary or unreadable files carry no text to count
        for t in tokenizer.encode(text, add_special_tokens=False):
            if not 0 <= t < vocab_size:
                raise ValueError(f"the tokenizer produced id {t}, outside the target's vocabulary of {vocab_size}")
            counts[t] += 1
    return counts


def count_generations(runtime, prompts: list[str], max_new_tokens: int, progress: bool = True) -> list[int]:
    """Ids the target emits by plain greedy decoding (its own distribution, no drafter involved)."""
    from tqdm import tqdm

    counts = [0] * runtime.decoder.ex.spec.vocab_size
    batch = runtime.recipe.limits.max_batch
    n = min(max_new_tokens, runtime.recipe.limits.max_output_len)
    limit = runtime.recipe.limits.max_input_len
    ids = [runtime.encode(p)[-limit:] for p in prompts]
    for i in tqdm(range(0, len(ids), batch), desc="generate", unit="batch", disable=not progress, file=sys.stderr):
        for r in runtime.decoder.generate(ids[i : i + batch], n, speculative=False):
            for t in r.token_ids:
                counts[t] += 1
    return counts


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "draft-vocab",
        help="count token frequencies (corpus and/or the target's generations) for a reduced draft vocabulary",
        description="Write the token-frequency table that `[model] draft_vocab` / `token_counts` in a recipe use.",
    )
    p.add_argument("--recipe", type=Path, default=None, help="recipe whose tokenizer/target to use (default: demo)")
    p.add_argument("--out", type=Path, required=True, help="the table to write (JSON)")
    p.add_argument("--corpus", type=Path, nargs="+", default=[], help="text files or folders to count")
    p.add_argument("--glob", default="*", help="files to take from corpus folders (default: all)")
    p.add_argument("--exclude", action="append", default=[], help="pattern of corpus files to skip (repeatable)")
    p.add_argument("--from-target", action="store_true", help="count the target's own greedy generations")
    p.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="JSONL with a 'prompt' per line (--from-target)")
    p.add_argument("--num-prompts", type=int, default=None, help="use the first N prompts (--from-target)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated per prompt (--from-target)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..models.checkpoint import read_config
    from ..models.draft_vocab import coverage, write_token_counts
    from ..recipe import load_recipe

    if not args.corpus and not args.from_target:
        raise ValueError("give --corpus PATH... and/or --from-target")
    recipe = load_recipe(args.recipe or Path(__file__).resolve().parents[2] / "build" / "demo.toml")
    vocab = read_config(recipe.target)["vocab_size"]
    counts = [0] * vocab
    sources = []
    if args.corpus:
        from ..models import load_tokenizer

        files = corpus_files(args.corpus, args.glob, args.exclude)
        part = count_corpus(load_tokenizer(recipe.tokenizer), files, vocab, not args.quiet)
        counts = [a + b for a, b in zip(counts, part)]
        sources.append(f"corpus: {len(files)} files under {', '.join(map(str, args.corpus))}")
    if args.from_target:
        from ..runtime import load_runtime

        rows = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows][: args.num_prompts]
        if not prompts:
            raise ValueError(f"{args.prompts} holds no prompts")
        rt = load_runtime(recipe, backend="torch", device=args.device)
        part = count_generations(rt, prompts, args.max_new_tokens, not args.quiet)
        counts = [a + b for a, b in zip(counts, part)]
        sources.append(f"target generations: {len(prompts)} prompts from {args.prompts}, greedy")
    write_token_counts(args.out, counts, "; ".join(sources))
    seen = sum(c > 0 for c in counts)
    cov = ", ".join(f"{n}: {100 * c:.1f}%" for n, c in coverage(counts, COVERAGE_SIZES).items())
    print(f"wrote {args.out}: {sum(counts)} tokens counted, {seen} of {vocab} ids seen; top-N coverage {cov or '-'}")
    return 0
