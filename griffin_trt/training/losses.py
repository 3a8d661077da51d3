"""GRIFFIN's training objective for one pass, and the token-alignable loss mask between passes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    regression: float = 1.0  # SmoothL1(regressed feature, h_(t+1))
    distill: float = 0.1  # cross-entropy against the target's distribution at t+1
    topk: float = 0.0  # the same cross-entropy restricted to the target's top-k tokens
    topk_k: int = 10


@dataclass
class TargetView:
    """What every pass is scored against, computed once per batch from the cached features."""

    h_next: torch.Tensor  # [B, T, H] the target's feature at t+1 (regression target)
    p_next: torch.Tensor  # [B, T, V] the target's distribution after position t+1
    topk_ids: torch.Tensor | None  # [B, T, k] its top-k tokens
    best: torch.Tensor  # [B, T] its argmax


def target_view(lm_head, h_next: torch.Tensor, topk_k: int | None) -> TargetView:
    with torch.no_grad():
        logits = lm_head(h_next).float()
        p = torch.softmax(logits, dim=-1)
        top = p.topk(topk_k, dim=-1).indices if topk_k else None
        return TargetView(h_next, p, top, logits.argmax(-1))


def pass_loss(logits: torch.Tensor, regress: torch.Tensor, tv: TargetView, weight: torch.Tensor,
              w: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted mean over the positions `weight` keeps; returns (loss, metrics)."""
    denom = weight.sum().clamp(min=1.0)
    reg = F.smooth_l1_loss(regress.float(), tv.h_next.float(), reduction="none").mean(-1)
    logq = torch.log_softmax(logits.float(), dim=-1)
    plogq = tv.p_next * logq
    ce = -plogq.sum(-1)
    loss = w.regression * (reg * weight).sum() / denom + w.distill * (ce * weight).sum() / denom
    metrics = {"regression": float((reg.detach() * weight).sum() / denom),
               "distill": float((ce.detach() * weight).sum() / denom)}
    if w.topk and tv.topk_ids is not None:
        tk = -plogq.gather(-1, tv.topk_ids).sum(-1)
        loss = loss + w.topk * (tk * weight).sum() / denom
        metrics["topk"] = float((tk.detach() * weight).sum() / denom)
    with torch.no_grad():
        metrics["top1"] = float(((logits.argmax(-1) == tv.best).float() * weight).sum() / denom)
        metrics["positions"] = float(weight.sum())
    return loss, metrics


def next_pass_keep(keep: torch.Tensor, logits: torch.Tensor, next_tokens: torch.Tensor, valid: torch.Tensor,
                   k: int) -> torch.Tensor:
    """Token-alignable masking: pass j+1 at t continues pass j's chain at t-1, which only stays
    aligned if the true token there (next_tokens[t-1]) is within the drafter's top-k."""
    with torch.no_grad():
        hit = (logits.topk(k, dim=-1).indices == next_tokens[..., None]).any(-1)
        cont = keep & hit
        return torch.cat((torch.zeros_like(cont[:, :1]), cont[:, :-1]), dim=1) & valid
