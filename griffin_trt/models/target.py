"""The target model: a Hugging Face causal LM run over our static KV cache.

The checkpoint is loaded by transformers (so every weight name, bias and MoE block is exactly
theirs); our forward reuses its modules and replaces only the cache and attention masking, which
speculative decoding needs in its own shape: tree masks, depth positions, explicit write slots.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .attention import apply_rope, cached_attention
from .checkpoint import CheckpointError, read_config

SUPPORTED = {
    "llama": "LLaMA-2/3, Vicuna",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "mixtral": "Mixtral",
}

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TargetModel(nn.Module):
    """Forward over `T` new tokens with caches `[layers, B, kv_heads, S, head_dim]` (or per-layer
    lists of `[B, kv_heads, S, head_dim]`).

    Returns float32 logits `[B, T, V]` (`[B, R, V]` for the R rows `logit_index` [B, R] names), the
    final-norm hidden states `[B, T, H]` (the drafter's features) and the caches after writing the
    new entries (lists when the caches came as lists).
    """

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model
        cfg = hf_model.config
        self.config = cfg
        attn = hf_model.model.layers[0].self_attn
        self.num_layers = len(hf_model.model.layers)
        self.head_dim = attn.head_dim
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.hidden_size = cfg.hidden_size
        self.vocab_size = cfg.vocab_size
        self.scale = attn.scaling
        self.inplace = True  # exporters switch this off to get the updated caches as graph outputs
        self.contiguous = False  # out-of-place writes as one run per row (ONNX TensorScatter), see attention.py

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.hf.model.embed_tokens

    @property
    def lm_head(self) -> nn.Linear:
        return self.hf.lm_head

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.lm_head.weight.dtype

    def use_static_experts(self) -> None:
        """Run MoE experts with static shapes (transformers' `batched_mm`). Its default, `grouped_mm`,
        sizes the experts' groups on the host: a CUDA graph cannot capture that, and the ONNX exporter
        has no translation for it. Same experts, same sums; no effect on dense models."""
        hf = self.hf
        if getattr(hf.config, "_experts_implementation", None) not in (None, "batched_mm") and hasattr(
            hf, "set_experts_implementation"
        ):
            hf.set_experts_implementation("batched_mm")

    def new_cache(self, batch: int, capacity: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.num_layers, batch, self.num_kv_heads, capacity, self.head_dim)
        dev = device or self.hf.lm_head.weight.device
        return torch.zeros(shape, dtype=self.dtype, device=dev), torch.zeros(shape, dtype=self.dtype, device=dev)

    def forward(self, tokens, positions, write_index, mask, k_cache, v_cache, logit_index=None):
        m = self.hf.model
        x = m.embed_tokens(tokens)
        cos, sin = m.rotary_emb(x, positions)
        b, t, _ = x.shape
        ks, vs = [], []
        for i, layer in enumerate(m.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = a.q_proj(h).view(b, t, -1, self.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(b, t, -1, self.head_dim).transpose(1, 2)
            v = a.v_proj(h).view(b, t, -1, self.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            o, k_all, v_all = cached_attention(
                q, k, v, k_cache[i], v_cache[i], write_index, mask, self.scale, self.inplace, self.contiguous
            )
            ks.append(k_all)
            vs.append(v_all)
            x = x + a.o_proj(o)
            x = x + _mlp(layer.mlp, layer.post_attention_layernorm(x))
        hidden = m.norm(x)
        rows = hidden if logit_index is None else hidden.gather(1, logit_index[..., None].expand(-1, -1, hidden.shape[-1]))
        logits = self.hf.lm_head(rows).float()
        if self.inplace:
            return logits, hidden, k_cache, v_cache
        if not isinstance(k_cache, torch.Tensor):
            return logits, hidden, ks, vs
        return logits, hidden, torch.stack(ks), torch.stack(vs)


def _mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = mlp(x)
    return out[0] if isinstance(out, tuple) else out  # older MoE blocks also return router logits


def load_target(folder: str | Path, dtype: str = "float32", device: str | torch.device = "cpu") -> TargetModel:
    """Load a Hugging Face causal LM folder of a supported family, strictly and offline."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    cfg = read_config(folder)
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED:
        names = ", ".join(f"{k} ({v})" for k, v in SUPPORTED.items())
        raise CheckpointError(f"{folder}: model_type {model_type!r} is not supported; supported: {names}")
    if dtype not in TORCH_DTYPES:
        raise CheckpointError(f"dtype {dtype!r} is not one of {list(TORCH_DTYPES)}")
    try:
        hf = AutoModelForCausalLM.from_pretrained(
            str(folder), dtype=TORCH_DTYPES[dtype], local_files_only=True, attn_implementation="sdpa"
        )
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: transformers could not load the target: {e}") from e
    hf.eval().requires_grad_(False).to(device)
    return TargetModel(hf)
