"""The decoding loop and what it needs: executors, results, assembly from a recipe."""
from .decoder import SpeculativeDecoder
from .load import Runtime, load_runtime
from .results import GenerationResult, SamplingParams

__all__ = ["GenerationResult", "Runtime", "SamplingParams", "SpeculativeDecoder", "load_runtime"]
