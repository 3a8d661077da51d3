"""Model definitions: the target (a Hugging Face causal LM) and the GRIFFIN drafter.

Nothing here knows about serving, engines or the decoding loop.
"""
from .checkpoint import CheckpointError
from .drafter import DraftStep, GriffinDrafter, load_drafter
from .pair import ModelPair, load_pair, load_tokenizer, stop_token_ids
from .target import TargetModel, load_target

__all__ = ["DraftStep", "ModelPair", "load_pair", "load_tokenizer", "stop_token_ids", "CheckpointError", "GriffinDrafter", "TargetModel", "load_drafter", "load_target"]
