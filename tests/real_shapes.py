"""Random-weight checkpoints at the shapes users bring (LLaMA-3-8B, Qwen2-7B, Mixtral-8x7B, Vicuna-7B) and
their GRIFFIN drafters, in the released layouts, written straight as bfloat16 safetensors.

Real: hidden size, query / KV heads, head size, vocabulary, RoPE theta, q/k/v biases (Qwen2), experts
and top-k (Mixtral), the drafter's own heads. Reduced, because none of it changes a graph's operators
(only how many layers repeat them, or the width of a matmul): `layers` decoder layers, the MLP width
(MLP_WIDTH instead of 11008-14336; Mixtral's 8 experts at full width would be 2.8 GB per layer), and
the drafter carries no embedding copy (the loader takes the target's, as it does for a release
without one).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from griffin_trt.models.drafter import DrafterConfig, GriffinDrafter

MLP_WIDTH = 512
# name -> (transformers class, target config, drafter heads / KV heads)
SHAPES = {
    "llama3-8b": ("LlamaForCausalLM", dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                           vocab_size=128256, rope_theta=500000.0), (32, 32)),
    "qwen2-7b": ("Qwen2ForCausalLM", dict(hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
                                          vocab_size=152064, rope_theta=1000000.0), (28, 4)),
    "mixtral-8x7b": ("MixtralForCausalLM", dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                                                vocab_size=32000, rope_theta=1000000.0, num_local_experts=8,
                                                num_experts_per_tok=2), (32, 8)),
    "vicuna-7b": ("LlamaForCausalLM", dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                                           vocab_size=32000, rope_theta=10000.0), (32, 32)),
}
DEMO_TOKENIZER = Path(__file__).resolve().parents[1] / "griffin_trt" / "demo" / "target"


def _random_bf16(shapes: dict[str, torch.Size], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or "layernorm" in name:
            out[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            out[name] = torch.randn(shape, generator=g, dtype=torch.bfloat16).mul_(0.02)
    return out


def _save(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(folder / "model.safetensors"))


def make_pair(root: Path, name: str, layers: int) -> tuple[Path, Path]:
    """(target folder, drafter folder) of `name` (SHAPES) under root; the demo's tokenizer rides along."""
    import transformers as tf

    cls_name, shape, (d_heads, d_kv) = SHAPES[name]
    target, drafter = Path(root) / f"{name}-target", Path(root) / f"{name}-drafter"
    target.mkdir(parents=True), drafter.mkdir(parents=True)
    cls = getattr(tf, cls_name)
    cfg = cls.config_class(**shape, intermediate_size=MLP_WIDTH, num_hidden_layers=layers, max_position_embeddings=8192,
                           tie_word_embeddings=False, dtype="bfloat16", bos_token_id=1, eos_token_id=2, pad_token_id=None)
    with torch.device("meta"):  # shapes only: the weights are drawn straight in bfloat16 below
        shapes = {k: v.shape for k, v in cls(cfg).state_dict().items()}
    cfg.save_pretrained(target)
    _save(target, _random_bf16(shapes, seed=0))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO_TOKENIZER / f, target / f)

    dcfg = dict(architectures=["LlamaForCausalLM"], hidden_size=shape["hidden_size"], intermediate_size=MLP_WIDTH,
                num_attention_heads=d_heads, num_key_value_heads=d_kv, num_hidden_layers=1,
                vocab_size=shape["vocab_size"], rms_norm_eps=1e-6, rope_theta=shape["rope_theta"],
                max_position_embeddings=8192, hidden_act="silu", pad_token_id=0, qkv_bias=False)
    with torch.device("meta"):
        dshapes = {k: v.shape for k, v in GriffinDrafter(DrafterConfig.from_dict(dcfg)).state_dict().items()
                   if k != "embed_tokens.weight"}
    (drafter / "config.json").write_text(json.dumps(dcfg))
    _save(drafter, _random_bf16(dshapes, seed=1))
    return target, drafter
