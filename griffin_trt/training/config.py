"""Every setting of `griffin-trt train`, with its default and its help text, in one place.

The command line is generated from these fields (`command.py`), so `--help` documents exactly
what the trainer reads. Module-level imports stay light: `griffin-trt --help` must stay fast.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


class TrainConfigError(ValueError):
    """A training setting that cannot be used, named with the reason."""


class TrainError(ValueError):
    """Training cannot start or continue; the message says why and what to do."""


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # --- what to train for, from what, and where to write it
    target: Path = _opt(None, "target checkpoint folder (Hugging Face layout: LLaMA family, Qwen2, Mistral, Mixtral)")
    corpus: tuple[Path, ...] = _opt((), "prompt sources: .jsonl files (one object per line with 'prompt', 'text' or "
                                        "'messages'), text files (cut into windows of --prompt-tokens tokens) or "
                                        "folders of those; several may be given", nargs="+")
    out: Path = _opt(None, "output folder for the drafter: config.json + weights in the released GRIFFIN layout")
    work_dir: Path | None = _opt(None, "data shards, training checkpoints and report (default: OUT.work next to OUT); "
                                       "rerunning with the same folder resumes where the last run stopped")
    # --- self-distillation data: the target's own continuations of the corpus prompts
    num_prompts: int = _opt(4096, "prompts drawn from the corpus for training data")
    prompt_tokens: int = _opt(128, "window length for text files; longest prompt kept for .jsonl (left-truncated)")
    new_tokens: int = _opt(128, "tokens the target generates per prompt (stops early at an end token)")
    temperature: float = _opt(0.0, "self-distillation sampling temperature (0: the target's greedy output)")
    chat: bool = _opt(False, "wrap each .jsonl 'prompt'/'text' in the tokenizer's chat template as a user turn "
                             "('messages' always use it; text-file windows never do)")
    prompt_loss: bool = _opt(False, "also train on prompt positions (default: only on what the target generated)")
    gen_batch: int = _opt(16, "prompts generated together")
    shard_size: int = _opt(256, "sequences per data shard (the unit of data resume)")
    feature_dtype: str = _opt("bfloat16", "dtype of the cached target features", choices=("float16", "bfloat16", "float32"))
    # --- the drafter
    intermediate_size: int | None = _opt(None, "drafter MLP width (default: the target's intermediate_size)")
    # --- GRIFFIN's training stages (one entry per stage)
    passes: tuple[int, ...] = _opt((1, 2, 3), "drafter passes per stage: 1 = feature regression + distillation; "
                                              "j >= 2 = token-alignable training over j passes", nargs="+")
    epochs: tuple[float, ...] = _opt((4.0, 1.0, 1.0), "epochs over the data per stage", nargs="+")
    lr: tuple[float, ...] = _opt((1e-4, 5e-5, 5e-5), "peak learning rate per stage (linear warm-up, cosine decay "
                                                     "to a tenth)", nargs="+")
    batch_size: int = _opt(8, "sequences per optimizer step")
    warmup: float = _opt(0.05, "warm-up fraction of each stage's steps")
    noise: float = _opt(0.2, "uniform noise on the input features, GRIFFIN's scale: U(-0.5, 0.5) x noise x 512 / hidden_size")
    w_regression: float = _opt(1.0, "weight of the SmoothL1 feature-regression loss")
    w_distill: float = _opt(0.1, "weight of the cross-entropy against the target's distribution")
    w_topk: float = _opt(0.5, "weight of the top-k loss (stages with >= 2 passes)")
    topk_loss: int = _opt(10, "the target's top-k tokens the top-k loss covers")
    mask_topk: int = _opt(3, "token-alignable masking: a chain continues into the next pass only where the true "
                             "next token is in the drafter's top-k")
    grad_clip: float = _opt(0.5, "gradient-norm clipping")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    # --- machine and reproducibility
    device: str = _opt("auto", "where to train", choices=("auto", "cpu", "cuda"))
    precision: str = _opt("auto", "training compute: bfloat16 autocast or float32 (auto: bfloat16 on CUDA, float32 on CPU)",
                          choices=("auto", "float32", "bfloat16"))
    target_dtype: str = _opt("auto", "dtype the target runs in for data generation (auto: bfloat16 on CUDA, float32 on CPU)",
                             choices=("auto", "float32", "float16", "bfloat16"))
    threads: int | None = _opt(None, "CPU threads (default: torch's choice); fixed for reproducible results")
    seed: int = _opt(0, "seed for prompt sampling, initialisation, batch order and noise")
    checkpoint_every: int = _opt(200, "optimizer steps between training checkpoints (and at every stage end)")
    stop_after: int | None = _opt(None, "stop after this many optimizer steps in this invocation, as if killed "
                                        "(rerun to resume); for time-sliced runs")
    # --- output and evaluation
    save_dtype: str = _opt("auto", "dtype of the written weights (auto: the target's torch_dtype)",
                           choices=("auto", "float32", "float16", "bfloat16"))
    include_embedding: bool = _opt(True, "write the embedding (a frozen copy of the target's) into the weights; "
                                         "--no-include-embedding leaves it out (griffin-trt's loaders take the "
                                         "target's; GRIFFIN's reference code needs it in)")
    weights_format: str = _opt("bin", "pytorch_model.bin (what the GRIFFIN reference loads) or model.safetensors",
                               choices=("bin", "safetensors"))
    eval_prompts: int = _opt(20, "corpus prompts held out of training, decoded through the runtime at the end (0: skip)")
    eval_new_tokens: int = _opt(128, "tokens generated per evaluation prompt")
    tree: tuple[int, int, int] = _opt((10, 5, 60), "evaluation tree as TOP_K DEPTH TOTAL_TOKENS (GRIFFIN's default)",
                                      nargs=3, metavar=("TOP_K", "DEPTH", "TOTAL"))
    quiet: bool = _opt(False, "no progress bars")

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else Path(self.out).with_name(Path(self.out).name + ".work")

    def validate(self) -> "TrainConfig":
        if self.target is None or self.out is None or not self.corpus:
            raise TrainConfigError("--target, --corpus and --out are required")
        missing = [str(c) for c in self.corpus if not Path(c).exists()]
        if missing:
            raise TrainConfigError(f"corpus {', '.join(missing)} does not exist")
        n = len(self.passes)
        if not n or any(p < 1 for p in self.passes):
            raise TrainConfigError(f"--passes must be positive integers, got {list(self.passes)}")
        for name in ("epochs", "lr"):
            if len(getattr(self, name)) != n:
                raise TrainConfigError(f"--{name} needs one value per stage ({n} stages from --passes), "
                                       f"got {list(getattr(self, name))}")
        if any(e <= 0 for e in self.epochs) or any(lr <= 0 for lr in self.lr):
            raise TrainConfigError("--epochs and --lr values must be > 0")
        for name in ("num_prompts", "prompt_tokens", "new_tokens", "gen_batch", "shard_size", "batch_size",
                     "topk_loss", "mask_topk", "checkpoint_every", "eval_new_tokens"):
            if getattr(self, name) < 1:
                raise TrainConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.eval_prompts < 0 or self.eval_prompts >= self.num_prompts:
            raise TrainConfigError(f"--eval-prompts must be in [0, --num-prompts), got {self.eval_prompts}")
        if self.temperature < 0 or not 0 <= self.warmup < 1 or self.noise < 0:
            raise TrainConfigError("--temperature and --noise must be >= 0 and --warmup in [0, 1)")
        k, depth, total = self.tree
        if k < 1 or depth < 1 or not 2 <= total <= 1 + k + depth * k * k:
            raise TrainConfigError(f"--tree {k} {depth} {total}: total must be in [2, 1 + k + depth*k*k]")
        if self.threads is not None and self.threads < 1:
            raise TrainConfigError(f"--threads must be >= 1, got {self.threads}")
        if self.stop_after is not None and self.stop_after < 1:
            raise TrainConfigError(f"--stop-after must be >= 1, got {self.stop_after}")
        return self

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = [str(x) if isinstance(x, Path) else x for x in v]
            out[f.name] = v
        return out

    # The settings that shape the cached data: a work folder made with others is not reused.
    DATA_KEYS = ("target", "corpus", "num_prompts", "prompt_tokens", "new_tokens", "temperature", "chat",
                 "prompt_loss", "shard_size", "feature_dtype", "target_dtype", "eval_prompts", "seed")
