"""Loading a target and its GRIFFIN drafter together, with the cross-checks between them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .draft_vocab import load_draft_vocab
from .drafter import DraftStep, GriffinDrafter, load_drafter
from .target import TORCH_DTYPES, TargetModel, load_target


@dataclass
class ModelPair:
    target: TargetModel
    drafter: GriffinDrafter
    draft_step: DraftStep


def load_pair(
    target_dir: str | Path,
    drafter_dir: str | Path,
    top_k: int,
    dtype: str = "float32",
    device: str = "cpu",
    draft_vocab: int | None = None,
    token_counts: str | Path | None = None,
) -> ModelPair:
    """draft_vocab/token_counts: draft among the draft_vocab most frequent ids of that table."""
    target = load_target(target_dir, dtype=dtype, device=device)
    vocab_ids = None
    if draft_vocab is not None:
        if token_counts is None:
            raise CheckpointError("draft_vocab needs a token-counts table (`griffin-trt draft-vocab`)")
        vocab_ids = load_draft_vocab(token_counts, draft_vocab, target.vocab_size)
    drafter = load_drafter(
        drafter_dir,
        target_hidden_size=target.hidden_size,
        target_vocab_size=target.vocab_size,
        target_embedding=target.embed_tokens.weight.detach(),
        dtype=TORCH_DTYPES[dtype],
        device=device,
    )
    return ModelPair(target, drafter, DraftStep(drafter, target.lm_head, top_k, vocab_ids))


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


class DeviceError(ValueError):
    """The device asked for does not exist on this host."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for, but torch sees no CUDA GPU on this host (use --device cpu)")
    return torch.device(device)


def stop_token_ids(target_dir: str | Path, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's, and those the target's generation_config / config list (chat
    models list every end token of their template there)."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    for name in ("generation_config.json", "config.json"):
        f = Path(target_dir) / name
        if f.is_file():
            try:
                eos = json.loads(f.read_text()).get("eos_token_id")
            except json.JSONDecodeError:
                continue
            if eos is not None:
                ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return sorted(ids)
