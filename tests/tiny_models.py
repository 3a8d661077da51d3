"""Tiny checkpoints in the released layouts, built in temporary folders for tests."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from griffin_trt.models.drafter import DrafterConfig, GriffinDrafter

FAMILIES = ("llama", "qwen2", "mistral", "mixtral")


def make_target(folder: Path, family: str = "llama", vocab: int = 96, hidden: int = 32, layers: int = 2, seed: int = 0,
                eos: int | None = None) -> Path:
    import transformers as tf

    common = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=eos,
        bos_token_id=None, pad_token_id=None,
    )
    if family == "llama":
        cfg, cls = tf.LlamaConfig(**common), tf.LlamaForCausalLM
    elif family == "qwen2":
        cfg, cls = tf.Qwen2Config(**common), tf.Qwen2ForCausalLM
    elif family == "mistral":
        cfg, cls = tf.MistralConfig(**common), tf.MistralForCausalLM
    elif family == "mixtral":
        cfg, cls = tf.MixtralConfig(num_local_experts=4, num_experts_per_tok=2, **common), tf.MixtralForCausalLM
    else:
        raise ValueError(family)
    torch.manual_seed(seed)
    model = cls(cfg)
    # Sharper logits than the default init: fewer near-ties, more structure for a drafter to find.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(folder)
    return Path(folder)


def drafter_config(hidden: int = 32, vocab: int = 96, inter: int = 48, heads: int = 4, qkv_bias: bool = False) -> dict:
    return dict(
        architectures=["LlamaForCausalLM"], hidden_size=hidden, intermediate_size=inter,
        num_attention_heads=heads, num_key_value_heads=heads, num_hidden_layers=1, vocab_size=vocab,
        rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=1024, hidden_act="silu",
        pad_token_id=0, qkv_bias=qkv_bias,
    )


def make_drafter(folder: Path, fmt: str = "safetensors", seed: int = 1, with_embedding: bool = True,
                 target: Path | None = None, **cfg_kw) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = drafter_config(**cfg_kw)
    torch.manual_seed(seed)
    model = GriffinDrafter(DrafterConfig.from_dict(cfg))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    if target is not None:  # a released drafter carries a copy of its target's embedding
        from safetensors.torch import load_file

        sd["embed_tokens.weight"] = load_file(str(Path(target) / "model.safetensors"))["model.embed_tokens.weight"]
    if not with_embedding:
        del sd["embed_tokens.weight"]
    (folder / "config.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(folder / "model.safetensors"))
    else:
        torch.save(sd, folder / "pytorch_model.bin")
    return folder
