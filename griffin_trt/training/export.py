"""A new drafter for a target, and writing it in the released GRIFFIN layout.

The layout is what the GRIFFIN releases ship and what both our loader and the reference read:
`config.json` (LLaMA-style, one hidden layer) and `pytorch_model.bin` (the reference's inference
loads only that name) or `model.safetensors`, holding exactly the drafter's state dict with the
released key names, the frozen copy of the target's embedding included. The drafter's q/k/v have
no bias (`qkv_bias: false`) for every target family: the reference's inference module has none.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..models.drafter import DrafterConfig, GriffinDrafter
from ..models.target import TORCH_DTYPES
from .config import TrainError

WEIGHT_NAMES = {"bin": "pytorch_model.bin", "safetensors": "model.safetensors"}


def _rope(hf_config) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from a transformers config of either generation (4.x / 5.x)."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        return float(params["rope_theta"]), (scaling if scaling.get("rope_type", "default") != "default" else None)
    return float(getattr(hf_config, "rope_theta", 10000.0)), getattr(hf_config, "rope_scaling", None)


def drafter_config(hf_config, intermediate_size: int | None, torch_dtype: str) -> dict:
    """GRIFFIN drafter config for a target: its width, heads, vocab and RoPE; KV heads = query heads."""
    c = hf_config
    heads = c.num_attention_heads
    if c.hidden_size % heads:
        heads = max(1, c.hidden_size // 128)
    theta, scaling = _rope(c)
    eos = c.eos_token_id
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": int(intermediate_size or c.intermediate_size),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "num_hidden_layers": 1,
        "hidden_act": "silu",
        "rms_norm_eps": float(getattr(c, "rms_norm_eps", 1e-6)),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "max_position_embeddings": int(c.max_position_embeddings),
        "vocab_size": c.vocab_size,
        "bos_token_id": getattr(c, "bos_token_id", None),
        "eos_token_id": eos,
        "pad_token_id": getattr(c, "pad_token_id", None),
        "qkv_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": torch_dtype,
    }


def new_drafter(config: dict, target_embedding: torch.Tensor, seed: int, device) -> GriffinDrafter:
    """Freshly initialised drafter (PyTorch's default init, seeded) with the target's embedding, frozen."""
    torch.manual_seed(seed)
    drafter = GriffinDrafter(DrafterConfig.from_dict(config))
    with torch.no_grad():
        drafter.embed_tokens.weight.copy_(target_embedding.float())
    drafter.embed_tokens.weight.requires_grad_(False)
    drafter.inplace = False  # training writes its caches out of place (autograd)
    return drafter.to(device)


def write_drafter(drafter: GriffinDrafter, config: dict, out: Path, weights_format: str,
                  include_embedding: bool = True) -> Path:
    """Write config.json + weights into `out`, replacing an earlier drafter there only once complete."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise TrainError(f"refusing to write into {out}: it exists and does not hold a drafter (no config.json)")
    dtype = TORCH_DTYPES[config["torch_dtype"]]
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in drafter.state_dict().items()
             if include_embedding or k != "embed_tokens.weight"}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        name = WEIGHT_NAMES[weights_format]
        if weights_format == "safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp / name), metadata={"format": "pt"})
        else:
            torch.save(state, tmp / name)
        if out.exists():
            for f in ("config.json", *WEIGHT_NAMES.values()):
                (out / f).unlink(missing_ok=True)
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
