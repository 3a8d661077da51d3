"""TensorRT-LLM's Triton ensemble inputs and what the griffin model does with each.

Clients written for TensorRT-LLM's Triton back end (genai-perf, Triton's OpenAI-compatible
frontend, hand-written gRPC/HTTP clients) send the input names of its `ensemble` model
(triton_backend/all_models/inflight_batcher_llm/ensemble/config.pbtxt). Our ensemble declares every
one of them with TensorRT-LLM's data type, so such a client works unchanged:

- USE: implemented (the ensemble model tokenizes text_input and passes the rest to `griffin` under its name);
- IGNORE: cannot apply here; accepted, and a note is logged once per input name;
- REFUSE: not implemented; accepted only with the value that changes nothing (`neutral`, or an
  empty tensor), otherwise the request is refused with an error that names the input.

Stdlib only: the table is read by the Triton model, the repository tests and the docs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USE, IGNORE, REFUSE = "use", "ignore", "refuse"


@dataclass(frozen=True)
class TrtllmInput:
    name: str  # the ensemble input (TensorRT-LLM's name)
    griffin: str  # the griffin model input it maps to ("" for text_input, which the ensemble model tokenizes)
    dtype: str  # Triton data type, as TensorRT-LLM declares it
    dims: str  # dims without the batch axis
    policy: str
    neutral: Any = None  # REFUSE: the value that changes nothing; None: only an empty tensor passes
    why: str = ""


INPUTS: tuple[TrtllmInput, ...] = (
    TrtllmInput("text_input", "", "TYPE_STRING", "[ 1 ]", USE),
    TrtllmInput("max_tokens", "request_output_len", "TYPE_INT32", "[ 1 ]", USE),
    TrtllmInput("stream", "streaming", "TYPE_BOOL", "[ 1 ]", USE),
    TrtllmInput("temperature", "temperature", "TYPE_FP32", "[ 1 ]", USE),
    TrtllmInput("top_p", "runtime_top_p", "TYPE_FP32", "[ 1 ]", USE),
    TrtllmInput("top_k", "runtime_top_k", "TYPE_INT32", "[ 1 ]", USE),
    TrtllmInput("seed", "seed", "TYPE_UINT64", "[ 1 ]", USE),
    TrtllmInput("random_seed", "random_seed", "TYPE_UINT64", "[ 1 ]", USE),  # the name before `seed`
    TrtllmInput("end_id", "end_id", "TYPE_INT32", "[ 1 ]", USE),
    TrtllmInput("stop_words", "stop_words", "TYPE_STRING", "[ -1 ]", USE),
    TrtllmInput("exclude_input_in_output", "exclude_input_in_output", "TYPE_BOOL", "[ 1 ]", USE),
    TrtllmInput("return_perf_metrics", "return_perf_metrics", "TYPE_BOOL", "[ 1 ]", USE,
                why="the statistics outputs are always returned"),
    TrtllmInput("return_num_input_tokens", "return_num_input_tokens", "TYPE_BOOL", "[ 1 ]", USE,
                why="num_input_tokens is always returned"),
    TrtllmInput("return_num_output_tokens", "return_num_output_tokens", "TYPE_BOOL", "[ 1 ]", USE,
                why="num_output_tokens is always returned"),
    TrtllmInput("pad_id", "pad_id", "TYPE_INT32", "[ 1 ]", IGNORE, why="outputs are never padded"),
    TrtllmInput("length_penalty", "len_penalty", "TYPE_FP32", "[ 1 ]", IGNORE,
                why="it applies to beam search only, and beam_width is 1"),
    TrtllmInput("beam_width", "beam_width", "TYPE_INT32", "[ 1 ]", REFUSE, 1, "no beam search"),
    TrtllmInput("num_return_sequences", "num_return_sequences", "TYPE_INT32", "[ 1 ]", REFUSE, 1,
                "one sequence per request"),
    TrtllmInput("bad_words", "bad_words", "TYPE_STRING", "[ -1 ]", REFUSE, "", "bad words are not implemented"),
    TrtllmInput("repetition_penalty", "repetition_penalty", "TYPE_FP32", "[ 1 ]", REFUSE, 1.0,
                "penalties are not implemented"),
    TrtllmInput("presence_penalty", "presence_penalty", "TYPE_FP32", "[ 1 ]", REFUSE, 0.0,
                "penalties are not implemented"),
    TrtllmInput("frequency_penalty", "frequency_penalty", "TYPE_FP32", "[ 1 ]", REFUSE, 0.0,
                "penalties are not implemented"),
    TrtllmInput("min_tokens", "min_tokens", "TYPE_INT32", "[ 1 ]", REFUSE, (0, 1), "min_tokens is not implemented"),
    TrtllmInput("return_log_probs", "return_log_probs", "TYPE_BOOL", "[ 1 ]", REFUSE, False,
                "log-probabilities are not returned"),
    TrtllmInput("return_context_logits", "return_context_logits", "TYPE_BOOL", "[ 1 ]", REFUSE, False,
                "logits are not returned"),
    TrtllmInput("return_generation_logits", "return_generation_logits", "TYPE_BOOL", "[ 1 ]", REFUSE, False,
                "logits are not returned"),
    TrtllmInput("decoder_text_input", "decoder_text_input", "TYPE_STRING", "[ 1 ]", REFUSE, "",
                "encoder-decoder models are not served"),
    TrtllmInput("prompt_embedding_table", "prompt_embedding_table", "TYPE_FP16", "[ -1, -1 ]", REFUSE, None,
                "prompt tuning is not implemented"),
    TrtllmInput("prompt_table_extra_id", "prompt_table_extra_id", "TYPE_UINT64", "[ 1 ]", REFUSE, None,
                "prompt tuning is not implemented"),
    TrtllmInput("prompt_vocab_size", "prompt_vocab_size", "TYPE_INT32", "[ 1 ]", REFUSE, 0,
                "prompt tuning is not implemented"),
    TrtllmInput("embedding_bias_words", "embedding_bias_words", "TYPE_STRING", "[ -1 ]", REFUSE, "",
                "embedding bias is not implemented"),
    TrtllmInput("embedding_bias_weights", "embedding_bias_weights", "TYPE_FP32", "[ -1 ]", REFUSE, None,
                "embedding bias is not implemented"),
    TrtllmInput("lora_task_id", "lora_task_id", "TYPE_UINT64", "[ 1 ]", REFUSE, None, "LoRA is not implemented"),
    TrtllmInput("lora_weights", "lora_weights", "TYPE_FP16", "[ -1, -1 ]", REFUSE, None, "LoRA is not implemented"),
    TrtllmInput("lora_config", "lora_config", "TYPE_INT32", "[ -1, 3 ]", REFUSE, None, "LoRA is not implemented"),
    TrtllmInput("guided_decoding_guide_type", "guided_decoding_guide_type", "TYPE_STRING", "[ 1 ]", REFUSE, "",
                "guided decoding is not implemented"),
    TrtllmInput("guided_decoding_guide", "guided_decoding_guide", "TYPE_STRING", "[ 1 ]", REFUSE, "",
                "guided decoding is not implemented"),
)

BY_GRIFFIN = {i.griffin: i for i in INPUTS if i.griffin}


def _values(array) -> list:
    """A tensor's values as plain Python (bytes decoded) — any sequence-like with `.reshape`/`.tolist`."""
    flat = array.reshape(-1).tolist()
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in flat]


def is_neutral(spec: TrtllmInput, array) -> bool:
    """True when the tensor asks for nothing griffin would have to do differently."""
    vals = _values(array)
    if not vals:
        return True
    if spec.neutral is None:
        return False
    allowed = spec.neutral if isinstance(spec.neutral, tuple) else (spec.neutral,)
    if isinstance(allowed[0], str):
        return all(str(v).strip() == "" for v in vals)
    return all(v in allowed for v in vals)


def check_unsupported(spec: TrtllmInput, array) -> str | None:
    """For an IGNORE/REFUSE input a request carries: a note to log (IGNORE), or ValueError (REFUSE)."""
    if spec.policy == IGNORE:
        return f"{spec.name} is accepted and ignored: {spec.why}"
    if spec.policy == REFUSE and not is_neutral(spec, array):
        vals = _values(array)
        shown = vals[0] if len(vals) == 1 else vals[:4]
        fix = "leave it out" if spec.neutral is None else f"send {spec.neutral!r} or leave it out"
        raise ValueError(f"{spec.name} = {shown!r} is not supported by griffin ({spec.why}); {fix}")
    return None
