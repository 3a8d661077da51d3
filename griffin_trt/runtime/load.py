"""Assembling a ready decoder from a recipe: executor by back end, tokenizer, stop tokens."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..recipe import Recipe
from .decoder import SpeculativeDecoder
from .executors import make_executor


@dataclass
class Runtime:
    decoder: SpeculativeDecoder
    tokenizer: object
    recipe: Recipe
    eos_ids: frozenset[int]
    backend: str

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def stop_token_ids(target_dir: Path, tokenizer) -> set[int]:
    """EOS from the tokenizer and generation_config (which may list the chat template's end tokens)."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    for name in ("generation_config.json", "config.json"):
        f = Path(target_dir) / name
        if f.is_file():
            eos = json.loads(f.read_text()).get("eos_token_id")
            if eos is not None:
                ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    return ids


def load_runtime(
    recipe: Recipe, build_dir: str | Path | None = None, backend: str | None = None, device: str | None = None
) -> Runtime:
    """torch runs the checkpoints directly; onnxruntime/tensorrt run what `griffin-trt build` wrote."""
    from ..models import load_tokenizer
    from ..models.pair import resolve_device

    backend = backend or recipe.backend
    build_dir = Path(build_dir or recipe.output_dir)
    dev = resolve_device(device or recipe.device)
    if backend == "torch":
        executor = make_executor(
            "torch",
            target=recipe.target,
            drafter=recipe.drafter,
            top_k=recipe.tree.top_k,
            target_kv_len=recipe.target_kv_len,
            drafter_kv_len=recipe.drafter_kv_len,
            max_batch=recipe.limits.max_batch,
            dtype=recipe.dtype,
            device=str(dev),
        )
        tok_dir = recipe.tokenizer
    else:
        if not (build_dir / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{build_dir} has no manifest.json: run `griffin-trt build --recipe {recipe.source}` first "
                f"(or use --backend torch)"
            )
        executor = make_executor(backend, build_dir=build_dir, max_batch=recipe.limits.max_batch)
        tok_dir = build_dir / "tokenizer" if (build_dir / "tokenizer").is_dir() else recipe.tokenizer
    tokenizer = load_tokenizer(tok_dir)
    eos = frozenset(stop_token_ids(recipe.target, tokenizer))
    decoder = SpeculativeDecoder(executor, recipe.tree, recipe.limits, eos)
    return Runtime(decoder, tokenizer, recipe, eos, backend)
