"""The cached training data: shards of (tokens, loss mask, lengths, target features) on disk.

Each shard is one safetensors file, written to a temporary name and renamed when complete, so a
killed run leaves only whole shards behind. `data.json` records the settings that produced them;
a work folder made with other settings is refused instead of silently mixed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

DATA_JSON = "data.json"


class DataMismatch(ValueError):
    """The work folder's cached data was made with other settings."""


def shard_path(folder: Path, i: int) -> Path:
    return Path(folder) / f"shard-{i:05d}.safetensors"


def write_shard(folder: Path, i: int, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = shard_path(folder, i)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def check_or_write_meta(folder: Path, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATA_JSON
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if diff:
            raise DataMismatch(
                f"{folder} holds data made with other settings ({', '.join(diff)}); "
                "use another --work-dir or delete that folder"
            )
        return
    tmp = path.with_name(DATA_JSON + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path)


class ShardData:
    """Random access to sequences across shards without loading the features into memory."""

    def __init__(self, folder: Path, num_shards: int):
        from safetensors import safe_open

        self.files = [safe_open(str(shard_path(folder, i)), framework="pt") for i in range(num_shards)]
        self.sizes = [f.get_slice("lengths").get_shape()[0] for f in self.files]
        self.index = [(s, r) for s, n in enumerate(self.sizes) for r in range(n)]
        self.seq_len = self.files[0].get_slice("tokens").get_shape()[1]
        self.hidden = self.files[0].get_slice("features").get_shape()[2]

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, ids: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.index[i] for i in ids]
        out = {}
        for key in ("tokens", "mask", "features"):
            out[key] = torch.cat([self.files[s].get_slice(key)[r : r + 1] for s, r in rows])
        out["tokens"] = out["tokens"].long()
        out["mask"] = out["mask"].bool()
        return out

    def token_counts(self, vocab_size: int) -> list[int]:
        """How often each id occurs at the trained (generated) positions: the target's own output
        frequencies, from which a reduced draft vocabulary is chosen (models/draft_vocab.py)."""
        counts = torch.zeros(vocab_size, dtype=torch.int64)
        for f in self.files:
            tokens, mask = f.get_tensor("tokens").long(), f.get_tensor("mask").bool()
            counts += torch.bincount(tokens[mask], minlength=vocab_size)[:vocab_size]
        return counts.tolist()
