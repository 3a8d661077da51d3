"""The decoding loop and what it needs: executors, results, assembly from a recipe."""
from .decoder import SpeculativeDecoder
from .load import Runtime, load_runtime
from .results import GenerationResult, SamplingParams
from .scheduler import Request, Scheduler

__all__ = ["GenerationResult", "Request", "Runtime", "SamplingParams", "Scheduler", "SpeculativeDecoder", "load_runtime"]
