"""A LLaMA decoder written for fast CPU training, saved as a Hugging Face `LlamaForCausalLM`.

Same math as transformers' LLaMA (RMSNorm in float32, rotate-half RoPE, SwiGLU, GQA), but with
fused q/k/v and gate/up projections and causal flash attention, so a bf16 training step is a
few large GEMMs. Parameters live in bfloat16 for the forward/backward; `MasterAdamW` keeps the
float32 copy the optimizer updates. `hf_state_dict` splits the fused weights into LLaMA's names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...models.drafter import RMSNorm


@dataclass(frozen=True)
class LMShape:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_positions: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def num_params(self) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_kv_heads * self.head_dim
        layer = h * (2 * h + 2 * kv) + 3 * h * i + 2 * h
        return self.num_layers * layer + 2 * self.vocab_size * h + h


class _Layer(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        kv = s.num_kv_heads * s.head_dim
        self.s = s
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.qkv = nn.Linear(s.hidden_size, s.hidden_size + 2 * kv, bias=False)
        self.o_proj = nn.Linear(s.hidden_size, s.hidden_size, bias=False)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.gate_up = nn.Linear(s.hidden_size, 2 * s.intermediate_size, bias=False)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        s = self.s
        b, t, _ = x.shape
        hd, kvh = s.head_dim, s.num_kv_heads
        q, k, v = self.qkv(self.input_layernorm(x)).split((s.hidden_size, kvh * hd, kvh * hd), dim=-1)
        q = _rope(q.view(b, t, s.num_heads, hd).transpose(1, 2), cos, sin)
        k = _rope(k.view(b, t, kvh, hd).transpose(1, 2), cos, sin)
        return q, k, v.view(b, t, kvh, hd).transpose(1, 2)

    def _rest(self, x: torch.Tensor, q, k, v, causal: bool) -> torch.Tensor:
        s = self.s
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=s.num_kv_heads != s.num_heads)
        x = x + self.o_proj(o.transpose(1, 2).reshape(x.shape[0], x.shape[1], s.hidden_size))
        gate, up = self.gate_up(self.post_attention_layernorm(x)).chunk(2, dim=-1)
        return x + self.down_proj(F.silu(gate) * up)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self._rest(x, *self._qkv(x, cos, sin), causal=True)

    def forward_cached(self, x, cos, sin, cache: list) -> torch.Tensor:
        """Incremental decoding: appends this call's keys/values to `cache` ([k, v] or empty)."""
        q, k, v = self._qkv(x, cos, sin)
        if cache:
            k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
        cache[:] = [k, v]
        return self._rest(x, q, k, v, causal=x.shape[1] > 1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class TrainLM(nn.Module):
    def __init__(self, s: LMShape):
        super().__init__()
        self.s = s
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(_Layer(s) for _ in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        inv = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.float) / s.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def init_weights(self, generator: torch.Generator, std: float = 0.02) -> None:
        """Normal(0, std) everywhere; residual-branch outputs scaled by 1/sqrt(2 * layers) (GPT-2)."""
        out_std = std / math.sqrt(2 * self.s.num_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("layernorm.weight") or name == "norm.weight":
                    p.fill_(1.0)
                else:
                    sd = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
                    p.copy_(torch.randn(p.shape, generator=generator) * sd)

    def rope_tables(self, t: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.arange(t, dtype=torch.float)[:, None] * self.inv_freq[None]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        cos, sin = self.rope_tables(tokens.shape[1], x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden(tokens))

    @torch.no_grad()
    def greedy(self, prompts: torch.Tensor, n: int) -> torch.Tensor:
        """Greedy continuations [B, n] of equal-length prompts [B, P] (KV-cached)."""
        caches = [[] for _ in self.layers]
        x, start, out = prompts, 0, []
        cos_all, sin_all = self.rope_tables(prompts.shape[1] + n, self.embed_tokens.weight.dtype)
        for _ in range(n):
            t = x.shape[1]
            h = self.embed_tokens(x)
            cos, sin = cos_all[start : start + t], sin_all[start : start + t]
            for layer, cache in zip(self.layers, caches):
                h = layer.forward_cached(h, cos, sin, cache)
            x = self.lm_head(self.norm(h[:, -1:])).argmax(-1)
            out.append(x)
            start += t
        return torch.cat(out, dim=1)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under transformers' LlamaForCausalLM names (fused projections split)."""
        s = self.s
        kv = s.num_kv_heads * s.head_dim
        out = {"model.embed_tokens.weight": self.embed_tokens.weight, "model.norm.weight": self.norm.weight,
               "lm_head.weight": self.lm_head.weight}
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            q, k, v = layer.qkv.weight.split((s.hidden_size, kv, kv), dim=0)
            gate, up = layer.gate_up.weight.chunk(2, dim=0)
            out.update({
                p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v,
                p + "self_attn.o_proj.weight": layer.o_proj.weight,
                p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up, p + "mlp.down_proj.weight": layer.down_proj.weight,
                p + "input_layernorm.weight": layer.input_layernorm.weight,
                p + "post_attention_layernorm.weight": layer.post_attention_layernorm.weight,
            })
        return {k: v.detach().contiguous() for k, v in out.items()}


class MasterAdamW:
    """AdamW on float32 master copies of a bfloat16 model's parameters.

    The model computes in bfloat16 (fast GEMMs on CPUs with AVX-512 bf16); updates of the order
    of lr * 1e-3 would vanish in bf16 weights, so the optimizer works on float32 masters and the
    model receives their rounded values after every step.
    """

    def __init__(self, model: nn.Module, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.1):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone() for p in self.params]
        decay = [m for p, m in zip(self.params, self.master) if p.dim() >= 2]
        no_decay = [m for p, m in zip(self.params, self.master) if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=lr, betas=betas,
        )

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, clip: float | None = 1.0) -> float:
        for p, m in zip(self.params, self.master):
            m.grad = p.grad.float() if p.grad is not None else None
        norm = torch.nn.utils.clip_grad_norm_(self.master, clip if clip else float("inf"))
        self.opt.step()
        with torch.no_grad():
            for p, m in zip(self.params, self.master):
                p.copy_(m)
                p.grad = None
        return float(norm)

    def state_dict(self) -> dict:
        return {"opt": self.opt.state_dict(), "master": [m.clone() for m in self.master]}

    def load_state_dict(self, d: dict) -> None:
        with torch.no_grad():
            for m, saved, p in zip(self.master, d["master"], self.params):
                m.copy_(saved)
                p.copy_(saved)
        self.opt.load_state_dict(d["opt"])
