"""Attention over a preallocated KV cache, shared by the target and the drafter.

The cache has a fixed capacity; each call writes its new keys/values at explicit slots
(`write_index`) and attends through an explicit boolean mask over all slots. The same code serves
prefill, tree verification and tree drafting, and exports to ONNX with static cache shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: [B, heads, T, D]; cos/sin: [B, T, D]
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


@torch.library.custom_op("griffin::write_cache_run", mutates_args=())
def write_cache_run(cache: torch.Tensor, new: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """`cache` [B, H, S, D] with `new` [B, H, T, D] written at slots start[b] .. start[b] + T - 1.

    Out of place, one contiguous run per row: exactly ONNX `TensorScatter` (linear mode, axis -2),
    which is what the exporter turns it into (builders/export_onnx.py) and what TensorRT lowers to
    its in-place KV-cache update.
    """
    slots = start[:, None] + torch.arange(new.shape[2], device=start.device)
    return cache.scatter(2, slots[:, None, :, None].expand_as(new), new)


@write_cache_run.register_fake
def _(cache: torch.Tensor, new: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(cache)


def write_cache(
    cache: torch.Tensor, new: torch.Tensor, write_index: torch.Tensor, inplace: bool, contiguous: bool = False
) -> torch.Tensor:
    """Write `new` [B, H, T, D] into `cache` [B, H, S, D] at slots `write_index` [B, T].

    contiguous (out of place only): every row's slots are one run, write_index[b] = start[b] + arange(T)
    (the decoding loop only ever writes such runs), so only write_index[:, 0] is used.
    """
    if inplace:
        return cache.scatter_(2, write_index[:, None, :, None].expand_as(new), new)
    if contiguous:
        return write_cache_run(cache, new, write_index[:, 0])
    return cache.scatter(2, write_index[:, None, :, None].expand_as(new), new)


def cached_attention(
    q: torch.Tensor,
    k_new: torch.Tensor,
    v_new: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    write_index: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
    inplace: bool,
    contiguous: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q: [B, Hq, T, D]; k_new/v_new: [B, Hkv, T, D]; caches [B, Hkv, S, D]; mask [B, T, S] bool.

    Returns the attention output [B, T, Hq*D] and the caches after the write.
    """
    k_all = write_cache(k_cache, k_new, write_index, inplace, contiguous)
    v_all = write_cache(v_cache, v_new, write_index, inplace, contiguous)
    groups = q.shape[1] // k_all.shape[1]
    k, v = k_all, v_all
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask[:, None], scale=scale)
    b, h, t, d = out.shape
    return out.transpose(1, 2).reshape(b, t, h * d), k_all, v_all
