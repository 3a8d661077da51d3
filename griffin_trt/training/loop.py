"""GRIFFIN's training stages over the cached data, with checkpoints a rerun resumes from.

Stage s trains with `passes[s]` drafter passes for `epochs[s]` epochs at peak rate `lr[s]`; every
stage starts where the previous one ended (fresh optimizer and schedule, as GRIFFIN's reference
restarts from the previous stage's checkpoint). The batch order and the feature noise of a step
are functions of (seed, stage, step), so a resumed run takes exactly the steps an uninterrupted
one would.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .config import TrainError
from .losses import LossWeights, next_pass_keep, pass_loss, target_view
from .multipass import run_passes
from .shards import ShardData

CKPT = "checkpoint.pt"


@dataclass(frozen=True)
class Stage:
    passes: int
    epochs: float
    lr: float

    def steps(self, n_seqs: int, batch: int) -> int:
        return max(1, math.ceil(self.epochs * max(1, n_seqs // batch)))


def lr_at(step: int, total: int, peak: float, warmup_frac: float) -> float:
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return peak * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def _mix(*xs: int) -> int:
    h = 0
    for x in xs:
        h = (h * 1_000_003 + int(x)) % (1 << 62)
    return h


class Trainer:
    def __init__(self, drafter, lm_head, data: ShardData, cfg, device: torch.device, work: Path, fingerprint: dict):
        self.drafter, self.lm_head, self.data, self.cfg = drafter, lm_head, data, cfg
        self.device, self.work, self.fingerprint = device, Path(work), fingerprint
        self.stages = [Stage(p, e, lr) for p, e, lr in zip(cfg.passes, cfg.epochs, cfg.lr)]
        self.params = [p for n, p in drafter.named_parameters() if n != "embed_tokens.weight"]
        bf16 = cfg.precision == "bfloat16" or (cfg.precision == "auto" and device.type == "cuda")
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        self.cache_dtype = torch.bfloat16 if bf16 else torch.float32
        self.noise_scale = cfg.noise * 512 / drafter.config.hidden_size
        self._perms: dict[tuple[int, int], torch.Tensor] = {}
        self.history: list[dict] = []
        self.seconds: list[float] = [0.0] * len(self.stages)  # wall time per stage, across resumed runs
        self.first_loss: float | None = None  # the current stage's first loss, kept across a resume

    # ------------------------------------------------------------------ checkpoints
    def _optimizer(self, stage: Stage):
        return torch.optim.AdamW(self.params, lr=stage.lr, betas=(0.9, 0.95), weight_decay=self.cfg.weight_decay)

    def save(self, stage_idx: int, step: int, opt) -> None:
        state = {
            "stage": stage_idx, "step": step, "fingerprint": self.fingerprint, "history": self.history,
            "seconds": self.seconds, "first_loss": self.first_loss,
            "drafter": {k: v for k, v in self.drafter.state_dict().items() if k != "embed_tokens.weight"},
            "optimizer": opt.state_dict() if opt is not None else None,
        }
        tmp = self.work / (CKPT + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.work / CKPT)

    def load(self):
        path = self.work / CKPT
        if not path.is_file():
            return 0, 0, None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["fingerprint"] != self.fingerprint:
            diff = sorted(k for k in set(state["fingerprint"]) | set(self.fingerprint)
                          if state["fingerprint"].get(k) != self.fingerprint.get(k))
            raise TrainError(f"{path} was made with other training settings ({', '.join(diff)}); "
                             "use another --work-dir or delete that checkpoint")
        missing = self.drafter.load_state_dict(state["drafter"], strict=False)
        assert missing.unexpected_keys == [] and missing.missing_keys == ["embed_tokens.weight"], missing
        self.history = state["history"]
        self.seconds = state.get("seconds", self.seconds)
        self.first_loss = state.get("first_loss")
        return state["stage"], state["step"], state["optimizer"]

    # ------------------------------------------------------------------ data order
    def _batch_ids(self, stage_idx: int, step: int) -> list[int]:
        n, b = len(self.data), self.cfg.batch_size
        per_epoch = max(1, n // b)
        epoch, k = divmod(step, per_epoch)
        key = (stage_idx, epoch)
        if key not in self._perms:
            g = torch.Generator().manual_seed(_mix(self.cfg.seed, 1 + stage_idx, epoch))
            self._perms = {key: torch.randperm(n, generator=g)}
        return self._perms[key][k * b : (k + 1) * b].tolist()

    def _noise(self, shape, stage_idx: int, step: int) -> torch.Tensor | None:
        if not self.noise_scale:
            return None
        g = torch.Generator(device=self.device).manual_seed(_mix(self.cfg.seed, 7 + stage_idx, step))
        return (torch.rand(shape, generator=g, device=self.device) - 0.5) * self.noise_scale

    # ------------------------------------------------------------------ one step
    def step(self, stage_idx: int, stage: Stage, step: int, opt) -> dict[str, float]:
        cfg = self.cfg
        batch = self.data.batch(self._batch_ids(stage_idx, step))
        tokens = batch["tokens"].to(self.device)
        feats = batch["features"].to(self.device, torch.float32)
        mask = batch["mask"].to(self.device)
        f_in, tok_in, h_next = feats[:, :-1], tokens[:, 1:], feats[:, 1:]
        valid = mask[:, 1:]
        nxt = torch.cat((tokens[:, 2:], torch.zeros_like(tokens[:, :1])), dim=1)  # x_(t+2): the drafted token
        weights = LossWeights(cfg.w_regression, cfg.w_distill, cfg.w_topk if stage.passes > 1 else 0.0, cfg.topk_loss)
        tv = target_view(self.lm_head, h_next, cfg.topk_loss if weights.topk else None)
        keep, total, metrics = valid, 0.0, []
        with self.autocast:
            for j, (logits, regress) in enumerate(run_passes(
                self.drafter, self.lm_head, f_in, tok_in, stage.passes, self._noise(f_in.shape, stage_idx, step),
                self.cache_dtype,
            ), start=1):
                loss, m = pass_loss(logits, regress, tv, keep.float(), weights)
                total = total + loss
                metrics.append(m)
                if j < stage.passes:
                    keep = next_pass_keep(keep, logits, nxt, valid, cfg.mask_topk)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        opt.step()
        out = {"loss": total.item()}
        for key in ("regression", "distill", "top1"):
            out[key] = sum(m[key] for m in metrics) / len(metrics)
        out["top1_last_pass"] = metrics[-1]["top1"]
        return out

    # ------------------------------------------------------------------ all stages
    def run(self) -> dict:
        cfg = self.cfg
        stage_idx, step, opt_state = self.load()
        done_here = 0
        self.drafter.train()
        while stage_idx < len(self.stages):
            stage = self.stages[stage_idx]
            total = stage.steps(len(self.data), cfg.batch_size)
            opt = self._optimizer(stage)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            bar = tqdm(total=total, initial=step, desc=f"stage {stage_idx + 1}/{len(self.stages)} ({stage.passes} pass"
                       f"{'es' if stage.passes > 1 else ''})", dynamic_ncols=True, disable=cfg.quiet, mininterval=1.0)
            ema = None
            if step == 0:
                self.first_loss = None
            while step < total:
                t_step = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, stage.lr, cfg.warmup)
                m = self.step(stage_idx, stage, step, opt)
                self.seconds[stage_idx] += time.perf_counter() - t_step
                if step == 0:
                    self.first_loss = m["loss"]
                ema = m if ema is None else {k: 0.9 * ema[k] + 0.1 * m[k] for k in m}
                step += 1
                done_here += 1
                bar.update(1)
                bar.set_postfix(loss=f"{ema['loss']:.3f}", reg=f"{ema['regression']:.4f}",
                                ce=f"{ema['distill']:.3f}", top1=f"{ema['top1']:.3f}", refresh=False)
                stopping = cfg.stop_after is not None and done_here >= cfg.stop_after
                if step % cfg.checkpoint_every == 0 or step == total or stopping:
                    if step == total:
                        self.history.append({"stage": stage_idx + 1, "passes": stage.passes, "steps": total,
                                             "seconds": round(self.seconds[stage_idx], 1),
                                             "first_loss": None if self.first_loss is None else round(self.first_loss, 5),
                                             **{k: round(v, 5) for k, v in ema.items()}})
                        self.save(stage_idx + 1, 0, None)
                    else:
                        self.save(stage_idx, step, opt)
                if stopping and not (step == total and stage_idx + 1 == len(self.stages)):
                    bar.close()
                    self.drafter.eval()
                    return {"stopped": True, "steps_done": done_here}
            bar.close()
            stage_idx, step = stage_idx + 1, 0
        self.drafter.eval()
        return {"stopped": False, "steps_done": done_here, "stages": self.history}
