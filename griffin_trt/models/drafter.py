"""GRIFFIN's draft network (arXiv 2502.11018), with the parameter names of the released checkpoints.

Per position t the drafter sees the target's final-norm feature h_t and the embedding of the next
token x_(t+1):

    fc:      z = Linear(2H->H)(cat[e, h]);  out = z + down(silu(up(cat[n_b(n_a(z)), n_b(e)])))
    layer:   y = out + attn(out)            (no input norm)
             y2 = cat[y, y] + swiglu(post_norm(y))        (down projection maps I -> 2H)
    split:   y2[:H] -> the target's LM head (draft logits);  y2[H:] -> next feature (regressed)

The drafter has no final norm and no LM head of its own; `embed_tokens` is a frozen copy of the
target's, taken from the target when the checkpoint omits it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .attention import apply_rope, cached_attention
from .checkpoint import CheckpointError, check_state_dict, read_config, read_weights


@dataclass(frozen=True)
class DrafterConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 4096
    qkv_bias: bool = False
    pad_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict, where: Path | str = "config.json") -> "DrafterConfig":
        required = ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
        missing = [k for k in required if k not in d]
        if missing:
            raise CheckpointError(f"{where}: drafter config lacks {missing}")
        if d.get("num_hidden_layers", 1) != 1:
            raise CheckpointError(f"{where}: a GRIFFIN drafter has one decoder layer, config says {d['num_hidden_layers']}")
        if d.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{where}: hidden_act {d['hidden_act']!r} is not supported (GRIFFIN uses silu)")
        if d["hidden_size"] % d["num_attention_heads"]:
            raise CheckpointError(f"{where}: hidden_size is not a multiple of num_attention_heads")
        return cls(
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_attention_heads=d["num_attention_heads"],
            num_key_value_heads=d.get("num_key_value_heads") or d["num_attention_heads"],
            vocab_size=d["vocab_size"],
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=d.get("rope_theta", 10000.0),
            rope_scaling=d.get("rope_scaling"),
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            qkv_bias=bool(d.get("qkv_bias", False)),
            pad_token_id=d.get("pad_token_id"),
        )


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class FusionMLP(nn.Module):
    """Token-guided fusion's MLP: no gate; one norm shared by the fused feature and the embedding."""

    def __init__(self, c: DrafterConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.up_proj = nn.Linear(2 * c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        n = self.input_layernorm
        return self.down_proj(F.silu(self.up_proj(torch.cat((n(z), n(e)), dim=-1))))


class TokenGuidedFusion(nn.Module):
    def __init__(self, c: DrafterConfig):
        super().__init__()
        self.fc = nn.Linear(2 * c.hidden_size, c.hidden_size, bias=True)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = FusionMLP(c)

    def forward(self, feature: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        z = self.fc(torch.cat((embed, feature), dim=-1))
        return z + self.mlp(self.post_attention_layernorm(z), embed)


class DraftAttention(nn.Module):
    def __init__(self, c: DrafterConfig):
        super().__init__()
        hd = c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * hd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * hd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.num_attention_heads * hd, c.hidden_size, bias=False)


class WideMLP(nn.Module):
    """SwiGLU whose down projection maps I -> 2H (the hidden half and the regressed half)."""

    def __init__(self, c: DrafterConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, 2 * c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DraftLayer(nn.Module):
    def __init__(self, c: DrafterConfig):
        super().__init__()
        self.self_attn = DraftAttention(c)
        self.mlp = WideMLP(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class GriffinDrafter(nn.Module):
    """forward(features, tokens, ...) -> (out_hidden, out_regress, k_cache, v_cache).

    `tokens[:, t]` is the token that follows the position whose feature is `features[:, t]`.
    Caches are `[B, kv_heads, S, head_dim]` (one layer).
    """

    def __init__(self, c: DrafterConfig):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.fc = TokenGuidedFusion(c)
        self.layers = nn.ModuleList([DraftLayer(c)])
        self.inplace = True
        self.contiguous = False  # see TargetModel.contiguous
        self.rotary = _rotary(c)

    def new_cache(self, batch: int, capacity: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        w = self.fc.fc.weight
        shape = (batch, c.num_key_value_heads, capacity, c.head_dim)
        return (
            torch.zeros(shape, dtype=dtype or w.dtype, device=device or w.device),
            torch.zeros(shape, dtype=dtype or w.dtype, device=device or w.device),
        )

    def forward(self, features, tokens, positions, write_index, mask, k_cache, v_cache):
        c = self.config
        e = self.embed_tokens(tokens).to(features.dtype)
        x = self.fc(features, e)
        layer = self.layers[0]
        a = layer.self_attn
        b, t, _ = x.shape
        q = a.q_proj(x).view(b, t, -1, c.head_dim).transpose(1, 2)
        k = a.k_proj(x).view(b, t, -1, c.head_dim).transpose(1, 2)
        v = a.v_proj(x).view(b, t, -1, c.head_dim).transpose(1, 2)
        cos, sin = self.rotary(x, positions)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        o, k_all, v_all = cached_attention(
            q, k, v, k_cache, v_cache, write_index, mask, c.head_dim**-0.5, self.inplace, self.contiguous
        )
        x = x + a.o_proj(o)
        y = torch.cat((x, x), dim=-1) + layer.mlp(layer.post_attention_layernorm(x))
        return y[..., : c.hidden_size], y[..., c.hidden_size :], k_all, v_all

    def expected_shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.state_dict().items()}


def _rotary(c: DrafterConfig) -> nn.Module:
    """RoPE from transformers' LLaMA implementation, so every rope_scaling type matches the target's."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    lc = LlamaConfig(
        hidden_size=c.hidden_size,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        max_position_embeddings=c.max_position_embeddings,
        rope_theta=c.rope_theta,
        rope_scaling=c.rope_scaling,
    )
    return LlamaRotaryEmbedding(lc)


def load_drafter(
    folder: str | Path,
    target_hidden_size: int | None = None,
    target_vocab_size: int | None = None,
    target_embedding: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> GriffinDrafter:
    """Load a released GRIFFIN drafter folder (`config.json` + safetensors or `pytorch_model.bin`).

    Strict: a missing, extra or mis-shaped tensor is an error naming it. `embed_tokens.weight` may be
    absent when `target_embedding` is given. With `qkv_bias: true`, absent q/k/v biases load as zeros:
    GRIFFIN's Qwen2 release says `qkv_bias: true`, yet the reference's inference module has no q/k/v
    bias and loads its file strictly, so that file holds none.
    """
    folder = Path(folder)
    cfg = DrafterConfig.from_dict(read_config(folder), folder / "config.json")
    if target_hidden_size is not None and cfg.hidden_size != target_hidden_size:
        raise CheckpointError(
            f"{folder}: drafter hidden_size {cfg.hidden_size} != target hidden_size {target_hidden_size}; "
            "this drafter was trained for another target"
        )
    if target_vocab_size is not None and cfg.vocab_size != target_vocab_size:
        raise CheckpointError(
            f"{folder}: drafter vocab_size {cfg.vocab_size} != target vocab_size {target_vocab_size}; "
            "this drafter was trained for another target"
        )
    with torch.device("meta"):
        model = GriffinDrafter(cfg)
    weights = read_weights(folder)
    optional = {"embed_tokens.weight"} if target_embedding is not None else set()
    qkv_biases = {f"layers.0.self_attn.{n}_proj.bias" for n in "qkv"} if cfg.qkv_bias else set()
    check_state_dict(model.expected_shapes(), weights, folder, optional | qkv_biases)
    if "embed_tokens.weight" not in weights:
        weights["embed_tokens.weight"] = target_embedding
    for name in qkv_biases - set(weights):
        weights[name] = torch.zeros(model.expected_shapes()[name])
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    model.rotary = _rotary(cfg)  # buffers built off the meta device
    return model.eval().requires_grad_(False).to(device)


class DraftStep(nn.Module):
    """One drafter pass with the target's LM head and a top-k inside, as the drafter engine runs it.

    Returns (topk_logprobs float32 [B, T, k], topk_ids int64 [B, T, k], regressed features [B, T, H],
    caches). Returning k candidates instead of full-vocabulary logits keeps the engine's output small.

    `vocab_ids` (int64 [N], see `draft_vocab.py`) restricts the head and the top-k to N target ids:
    the head keeps only their rows, log-probabilities are normalised over them, and the chosen
    positions are mapped back to target ids here, so every exported graph and executor gets it.
    """

    def __init__(self, drafter: GriffinDrafter, lm_head: nn.Linear, top_k: int, vocab_ids: torch.Tensor | None = None):
        super().__init__()
        self.drafter = drafter
        self.top_k = top_k
        self.draft_vocab = None
        if vocab_ids is None:
            self.lm_head = lm_head
            return
        vocab = lm_head.weight.shape[0]
        ids = torch.as_tensor(vocab_ids, dtype=torch.int64).flatten()
        if ids.numel() < top_k:
            raise ValueError(f"the draft vocabulary has {ids.numel()} ids, fewer than top_k = {top_k}")
        if ids.min() < 0 or ids.max() >= vocab or ids.unique().numel() != ids.numel():
            raise ValueError(f"draft vocabulary ids must be distinct and in [0, {vocab})")
        w = lm_head.weight
        head = nn.Linear(w.shape[1], ids.numel(), bias=lm_head.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            head.weight.copy_(w[ids.to(w.device)])
            if lm_head.bias is not None:
                head.bias.copy_(lm_head.bias[ids.to(w.device)])
        self.lm_head = head.requires_grad_(False)
        self.draft_vocab = ids.numel()
        self.register_buffer("vocab_ids", ids.to(w.device))

    def forward(self, features, tokens, positions, write_index, mask, k_cache, v_cache):
        out_hidden, regress, k_cache, v_cache = self.drafter(
            features, tokens, positions, write_index, mask, k_cache, v_cache
        )
        logp = torch.log_softmax(self.lm_head(out_hidden).float(), dim=-1)
        vals, ids = torch.topk(logp, self.top_k, dim=-1)
        if self.draft_vocab is not None:
            ids = self.vocab_ids[ids]
        return vals, ids, regress, k_cache, v_cache
