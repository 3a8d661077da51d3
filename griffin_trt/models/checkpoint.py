"""Reading checkpoint folders in the layouts the GRIFFIN and Hugging Face releases use."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with what is wrong and where."""


def read_config(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{folder}: no config.json (expected a Hugging Face style checkpoint folder)")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg}: not valid JSON: {e}") from e


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """One weight file; a truncated or corrupt file is a CheckpointError naming it, not a traceback."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors, pickle and zip readers raise many kinds here
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read the weights ({type(e).__name__}: {detail}); the file is truncated or corrupt"
        ) from e


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint: one file or a sharded index, safetensors preferred."""
    folder = Path(folder)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return _load_file(folder / name)
    for name in INDEX_FILES:
        index = folder / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(_load_file(folder / shard))
            return out
    raise CheckpointError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_FILES + INDEX_FILES)})")


def check_state_dict(
    expected: dict[str, torch.Size], got: dict[str, torch.Tensor], where: Path | str, optional: set[str] = frozenset()
) -> None:
    """Strict load: every missing, unexpected or mis-shaped tensor is named in the error."""
    problems = []
    missing = sorted(set(expected) - set(got) - set(optional))
    extra = sorted(set(got) - set(expected))
    if missing:
        problems.append(f"missing tensors: {missing}")
    if extra:
        problems.append(f"unexpected tensors: {extra}")
    for name in sorted(set(expected) & set(got)):
        if tuple(got[name].shape) != tuple(expected[name]):
            problems.append(f"{name} has shape {list(got[name].shape)}, expected {list(expected[name])}")
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match the GRIFFIN drafter layout: " + "; ".join(problems))
