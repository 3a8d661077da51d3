"""Pre-training the demo target: next-token cross-entropy on the corpus token stream, in bf16.

Deterministic and resumable: the windows of step i come from a seeded permutation, the state
(bf16 weights, float32 masters, AdamW moments, step) is checkpointed every `checkpoint_every`
steps, and a rerun continues bit-exactly from the last checkpoint.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .lm import LMShape, MasterAdamW, TrainLM

CKPT = "target-checkpoint.pt"


@dataclass(frozen=True)
class PretrainSettings:
    seq_len: int
    batch: int
    steps: int
    lr: float
    warmup: int
    final_lr: float  # fraction of the peak reached at the end of the cosine
    weight_decay: float
    grad_clip: float
    seed: int
    checkpoint_every: int = 100
    # Sequence-level unlikelihood (Welleck et al. 2019) over the last `ul_steps` steps: the model
    # continues `ul_batch` corpus windows greedily and is taught away from every token that
    # completes a 4-gram already in the sequence -- the copy decisions greedy loops are made of.
    ul_steps: int = 0
    ul_weight: float = 1.0
    ul_batch: int = 8
    ul_prompt: int = 64
    ul_new: int = 64


def lr_at(step: int, s: PretrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    p = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (s.final_lr + (1 - s.final_lr) * 0.5 * (1 + math.cos(math.pi * p)))


def window_order(n_windows: int, step: int, batch: int, seed: int) -> list[int]:
    """Window ids of a step: consecutive slices of per-epoch seeded permutations."""
    per_epoch = n_windows // batch
    epoch, k = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 7_919 + epoch)
    return torch.randperm(n_windows, generator=g)[k * batch : (k + 1) * batch].tolist()


def repeated_ngrams(seq: torch.Tensor, n: int = 4) -> torch.Tensor:
    """[B, L] bool: token t completes an n-gram that already ended at some earlier position."""
    B, L = seq.shape
    gram = torch.zeros(B, L, dtype=torch.int64)
    for i in range(n):
        gram[:, n - 1 :] = gram[:, n - 1 :] * 1_000_003 + seq[:, i : L - n + 1 + i]
    gram[:, : n - 1] = -1 - torch.arange(n - 1)  # no complete n-gram ends there
    earlier = torch.ones(L, L, dtype=torch.bool).tril(-1)
    return ((gram[:, :, None] == gram[:, None, :]) & earlier).any(-1) & (gram >= 0)


def unlikelihood_loss(model: TrainLM, prompts: torch.Tensor, n_new: int) -> tuple[torch.Tensor, float]:
    """-mean log(1 - p(token)) over continuation tokens that repeat a 4-gram; and their share."""
    cont = model.greedy(prompts, n_new)
    seq = torch.cat((prompts, cont), dim=1)
    rep = repeated_ngrams(seq)[:, 1:]
    rep[:, : prompts.shape[1] - 1] = False
    logp = torch.log_softmax(model(seq[:, :-1]).float(), dim=-1).gather(-1, seq[:, 1:, None]).squeeze(-1)
    p = logp.exp().clamp(max=1 - 1e-6)
    loss = -(torch.log1p(-p) * rep).sum() / rep.sum().clamp(min=1)
    return loss, float(rep[:, prompts.shape[1] - 1 :].float().mean())


def pretrain(shape: LMShape, stream: torch.Tensor, s: PretrainSettings, work: Path, progress: bool = True) -> TrainLM:
    """Train (or resume); returns the model in float32 holding the optimizer's master weights."""
    work.mkdir(parents=True, exist_ok=True)
    model = TrainLM(shape)
    model.init_weights(torch.Generator().manual_seed(s.seed))
    model = model.to(torch.bfloat16)
    opt = MasterAdamW(model, s.lr, weight_decay=s.weight_decay)
    start = 0
    ckpt = work / CKPT
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["settings"] != (shape, s):
            raise RuntimeError(f"{ckpt} was made with other settings; delete it to start over")
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    windows = stream[: (stream.numel() - 1) // s.seq_len * s.seq_len + 1]
    n_windows = (windows.numel() - 1) // s.seq_len
    bar = tqdm(total=s.steps, initial=start, desc="target", dynamic_ncols=True, disable=not progress, mininterval=2.0)
    ema = rep_ema = None
    model.train()
    for step in range(start, s.steps):
        opt.set_lr(lr_at(step, s))
        ids = window_order(n_windows, step, s.batch, s.seed)
        x = torch.stack([windows[i * s.seq_len : (i + 1) * s.seq_len + 1] for i in ids])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, shape.vocab_size), x[:, 1:].reshape(-1))
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step >= s.steps - s.ul_steps:
            g = torch.Generator().manual_seed(s.seed * 104_729 + step)
            starts = torch.randint(0, windows.numel() - s.ul_prompt, (s.ul_batch,), generator=g).tolist()
            prompts = torch.stack([windows[i : i + s.ul_prompt] for i in starts])
            ul, rep = unlikelihood_loss(model, prompts, s.ul_new)
            loss = loss + s.ul_weight * ul
            rep_ema = rep if rep_ema is None else 0.9 * rep_ema + 0.1 * rep
            bar.set_postfix(loss=f"{ema:.3f}", repeats=f"{rep_ema:.3f}", refresh=False)
        else:
            bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
        loss.backward()
        opt.step(s.grad_clip)
        bar.update(1)
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
            tmp = ckpt.with_name(CKPT + ".tmp")
            torch.save({"settings": (shape, s), "step": step + 1, "optimizer": opt.state_dict()}, tmp)
            os.replace(tmp, ckpt)
    bar.close()
    model = model.float()
    with torch.no_grad():
        for p, m in zip(opt.params, opt.master):
            p.copy_(m)
    return model.eval().requires_grad_(False)
