"""Assembling a ready decoder from a recipe: executor by back end, tokenizer, stop tokens."""
from __future__ import annotations

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


def load_runtime(
    recipe: Recipe, build_dir: str | Path | None = None, backend: str | None = None, device: str | None = None,
    executor_options: dict | None = None,
) -> Runtime:
    """torch runs the checkpoints directly; onnxruntime/tensorrt run what `griffin-trt build` wrote.
    `executor_options`: extra keyword arguments of the built back end's executor (benchmarks)."""
    from ..models import load_tokenizer, stop_token_ids
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
            draft_vocab=recipe.draft_vocab,
            token_counts=recipe.token_counts,
        )
        tok_dir = recipe.tokenizer
    else:
        if not (build_dir / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{build_dir} has no manifest.json: run `griffin-trt build --recipe {recipe.source}` first "
                f"(or use --backend torch)"
            )
        _check_draft_vocab(recipe, build_dir)
        executor = make_executor(backend, build_dir=build_dir, max_batch=recipe.limits.max_batch,
                                 **(executor_options or {}))
        tok_dir = build_dir / "tokenizer" if (build_dir / "tokenizer").is_dir() else recipe.tokenizer
    tokenizer = load_tokenizer(tok_dir)
    eos = frozenset(stop_token_ids(recipe.target, tokenizer))
    decoder = SpeculativeDecoder(
        executor, recipe.tree, recipe.limits, eos, recipe.schedule,
        detokenize=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )
    return Runtime(decoder, tokenizer, recipe, eos, backend)


def _check_draft_vocab(recipe: Recipe, build_dir: Path) -> None:
    """The drafter graph bakes the draft vocabulary in: refuse a build made with another one."""
    from ..builders.manifest import read_manifest, sha256_file

    m = read_manifest(build_dir)
    built = m.get("draft_vocab")
    rebuild = f"rebuild with `griffin-trt build --recipe {recipe.source}`"
    if built != recipe.draft_vocab:
        raise ValueError(f"{build_dir} was built with draft_vocab = {built} but the recipe says {recipe.draft_vocab}; {rebuild}")
    table = m["files"].get("token_counts")
    if built is not None and m["sha256"].get(table) != sha256_file(recipe.token_counts):
        raise ValueError(f"{build_dir} was built from another token-counts table than {recipe.token_counts}; {rebuild}")
