"""A reduced draft vocabulary (the FR-Spec / VocabTrim idea): the drafter's LM head and top-k run
over the N most frequent tokens only, and the chosen ids are mapped back to target ids.

Only the draft changes: the target still verifies over its whole vocabulary, so the output stays
the target's (greedy: token for token; sampling: in distribution). A token outside the N is never
drafted, so the target emits it as the bonus token after rejecting the drafts.

The frequency table is a JSON file (`token-counts`, written by `griffin-trt draft-vocab`):

    {"format": 1, "kind": "griffin-trt token counts", "vocab_size": V, "source": str,
     "counted_tokens": int, "counts": [int] * V}

The draft vocabulary of size N is the N ids with the highest counts, ties to the lower id, in
ascending id order: a pure function of (table, N), so the runtime, the exported drafter graph and
the manifest always agree.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpoint import CheckpointError

FORMAT = 1
KIND = "griffin-trt token counts"


def write_token_counts(path: str | Path, counts: Sequence[int], source: str) -> Path:
    """Write a frequency table (atomically)."""
    path = Path(path)
    counts = [int(c) for c in counts]
    if not counts or min(counts) < 0:
        raise ValueError("token counts must be a non-empty list of non-negative integers")
    data = {
        "format": FORMAT,
        "kind": KIND,
        "vocab_size": len(counts),
        "source": source,
        "counted_tokens": sum(counts),
        "counts": counts,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    os.replace(tmp, path)
    return path


def read_token_counts(path: str | Path) -> list[int]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"token-counts file {path} does not exist; write one with `griffin-trt draft-vocab`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a griffin-trt token-counts file (format {FORMAT})")
    counts = data.get("counts")
    if not isinstance(counts, list) or len(counts) != data.get("vocab_size"):
        raise CheckpointError(f"{path}: counts must be a list of vocab_size integers")
    return [int(c) for c in counts]


def coverage(counts: Sequence[int], sizes) -> dict[int, float]:
    """Share of the counted tokens that the `size` most frequent ids cover."""
    total = sum(counts) or 1
    ranked = sorted(counts, reverse=True)
    return {n: sum(ranked[:n]) / total for n in sizes if n <= len(counts)}


def select_draft_vocab(counts: Sequence[int], size: int) -> torch.Tensor:
    """The `size` most frequent ids (ties: lower id first), ascending, int64."""
    if not 1 <= size <= len(counts):
        raise CheckpointError(f"draft_vocab = {size} must be in [1, {len(counts)}] (the table's vocabulary)")
    c = torch.tensor(list(counts), dtype=torch.float64)
    order = torch.sort(-c, stable=True).indices  # descending count, ascending id on ties
    return torch.sort(order[:size]).values.to(torch.int64)


def load_draft_vocab(path: str | Path, size: int, vocab_size: int | None = None) -> torch.Tensor:
    """Read a table and select its draft vocabulary; the table must cover the target's vocabulary."""
    counts = read_token_counts(path)
    if vocab_size is not None and len(counts) != vocab_size:
        raise CheckpointError(
            f"{path}: the table counts {len(counts)} token ids but the target's vocabulary has {vocab_size}; "
            "it was made for another model"
        )
    return select_draft_vocab(counts, size)
