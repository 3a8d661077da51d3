"""`griffin-trt train`: the command line, generated from TrainConfig's fields."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from .config import TrainConfig, TrainConfigError, TrainError

DESCRIPTION = """\
Train a GRIFFIN drafter (arXiv 2502.11018) for a target checkpoint, by self-distillation:
  1. the target continues prompts from --corpus; tokens and its final-norm features are cached in
     shards under --work-dir (resumable);
  2. stage 1 (--passes 1): SmoothL1 feature regression + cross-entropy against the target's
     distribution, uniform noise on the input features;
  3. stages with j >= 2 passes: token-alignable training, the drafter fed its own features for j
     passes, chains whose true next token leaves its top-k masked out, plus the top-k loss;
  4. the drafter is written to --out in the released layout (config.json + weights) and decoded
     through the real runtime on held-out prompts: tau = tokens per target forward.
Deterministic for a given seed, thread count and machine; a killed run resumes from its last
checkpoint when rerun with the same --work-dir."""


def _base_type(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is tuple:
        return args[0]
    if args:
        return _base_type(args[0])
    return tp


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a GRIFFIN drafter for a target (self-distillation, GRIFFIN's stages)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        default = f.default
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        if default is not None and shown != "" and "(default" not in help_text:
            help_text += f" (default: {shown})"
        p.add_argument(flag, type=Path if tp is Path else tp, default=default, help=help_text,
                       required=f.name in ("target", "corpus", "out"), **meta)
    p.set_defaults(func=run_train)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {}
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name)
        values[f.name] = tuple(v) if isinstance(v, list) else v
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    from .pipeline import train

    try:
        report = train(config_from_args(args).validate())
    except (TrainConfigError, TrainError) as e:
        print(f"griffin-trt train: error: {e}", file=sys.stderr)
        return 2
    if report.get("stopped"):
        print(f"stopped after {report['steps_done']} steps as asked; rerun the same command to resume", file=sys.stderr)
    return 0
