"""`griffin-trt train`: GRIFFIN drafters for any supported target, by self-distillation.

    from griffin_trt.training import TrainConfig, train
    report = train(TrainConfig(target=..., corpus=(...,), out=...))

Modules: config (every setting), command (the CLI), corpus (prompts), selfdistill + shards (the
cached data), multipass + losses + loop (GRIFFIN's stages), export (released layout), evaluate
(tau through the runtime), pipeline (the whole run).
"""
from .config import TrainConfig, TrainConfigError, TrainError
from .pipeline import train

__all__ = ["TrainConfig", "TrainConfigError", "TrainError", "train"]
