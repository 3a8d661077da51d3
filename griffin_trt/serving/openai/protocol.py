"""OpenAI request bodies -> one checked `Generation`, and OpenAI's error shape.

Every value goes through griffin_trt.request_rules, so a refusal here has the same one-line message as
`griffin-trt generate` and the Triton models. Fields OpenAI defines that we cannot honour (`n` > 1,
`logprobs`, penalties, ...) are accepted only at the value that changes nothing and otherwise refused by
name; a field OpenAI does not define is refused as OpenAI itself does ("Unrecognized request argument").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ... import request_rules as rules

# OpenAI's default for the legacy completions endpoint; chat defaults to the deployment's max_output_len.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

# name -> (the values that change nothing, why another value cannot be served)
NEUTRAL_ONLY: dict[str, tuple[tuple, str]] = {
    "n": ((1,), "one choice per request"),
    "best_of": ((1,), "one choice per request"),
    "logprobs": ((False,), "log-probabilities are not returned"),
    "top_logprobs": ((0,), "log-probabilities are not returned"),
    "echo": ((False,), "the prompt is not echoed"),
    "suffix": (("",), "insertion is not implemented"),
    "presence_penalty": ((0,), "penalties are not implemented"),
    "frequency_penalty": ((0,), "penalties are not implemented"),
    "repetition_penalty": ((1,), "penalties are not implemented"),
    "logit_bias": (({},), "logit bias is not implemented"),
    "min_tokens": ((0,), "min_tokens is not implemented"),
    "ignore_eos": ((False,), "the model's end tokens always stop it"),
    "tools": (([],), "tool calls are not implemented"),
    "tool_choice": (("none",), "tool calls are not implemented"),
    "response_format": (({"type": "text"},), "structured output is not implemented"),
}


class OpenAIError(Exception):
    """A request the endpoint answers with an error, in OpenAI's shape."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.status, self.param, self.type, self.code = message, status, param, type, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ServedModel:
    """What the endpoint needs of a deployment, read once from its recipe."""

    name: str
    tokenizer: Any  # a transformers tokenizer (no torch needed)
    max_input_len: int
    max_output_len: int
    bytes_per_token: int  # request_rules.max_token_bytes(tokenizer): the prompt's byte bound

    @classmethod
    def of(cls, name: str, tokenizer, max_input_len: int, max_output_len: int) -> "ServedModel":
        return cls(name, tokenizer, int(max_input_len), int(max_output_len), rules.max_token_bytes(tokenizer))


@dataclass(frozen=True)
class Generation:
    """One checked request, ready for the griffin model."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    speculative: bool
    stream: bool
    include_usage: bool


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Body(BaseModel):
    """Fields both endpoints share. `speculative` (ours) switches GRIFFIN off per request; `top_k` as
    vLLM and SGLang accept it."""

    model_config = ConfigDict(extra="forbid")
    model: str
    # null means the default, as OpenAI reads it
    max_tokens: int | None = None
    temperature: float | None = None  # default 1.0, OpenAI's
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    speculative: bool | None = None
    user: str | None = None
    # accepted only at their neutral values (NEUTRAL_ONLY)
    n: Any = None
    best_of: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    repetition_penalty: Any = None
    logit_bias: Any = None
    min_tokens: Any = None
    ignore_eos: Any = None


class CompletionBody(_Body):
    prompt: str | list[str] | list[int]


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ...: the template may use them
    role: str
    content: str | list[_TextPart] | None = None


class ChatBody(_Body):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    tools: Any = None
    tool_choice: Any = None
    response_format: Any = None


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OpenAIError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise OpenAIError("the request body must be a JSON object")
    return body


def _validated(cls, body: dict):
    try:
        return cls.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise OpenAIError(f"Unrecognized request argument supplied: {where}", param=where) from None
        raise OpenAIError(f"{where}: {err['msg']}", param=where.split(".")[0] or None) from None


def _same(value, neutral) -> bool:
    return isinstance(value, bool) == isinstance(neutral, bool) and value == neutral


def _refuse_unsupported(req: _Body) -> None:
    for name, (neutral, why) in NEUTRAL_ONLY.items():
        value = getattr(req, name, None)
        if value is None or any(_same(value, n) for n in neutral):
            continue
        raise OpenAIError(
            f"{name} = {json.dumps(value)} is not supported ({why}); send {json.dumps(neutral[0])} or leave it out",
            param=name,
        )


def _checked(param: str, check, *args):
    try:
        return check(*args)
    except (ValueError, TypeError) as e:  # RequestError: request_rules' one-line message
        raise OpenAIError(str(e), param=param) from None


def _text_ids(model: ServedModel, text: str, param: str, special_tokens: bool) -> list[int]:
    text = _checked(param, rules.check_prompt_text, text, model.max_input_len, model.bytes_per_token)
    ids = model.tokenizer(text, add_special_tokens=special_tokens).input_ids
    return _checked(param, rules.check_prompt_ids, ids, model.max_input_len, None)


def _default(value, default):
    return default if value is None else value


def _check_model_and_fields(req: _Body, model: ServedModel) -> None:
    """Before any tokenizing: another model's request (first, as OpenAI answers), then unsupported fields."""
    if req.model != model.name:
        raise OpenAIError(f"The model `{req.model}` does not exist.", status=404, param="model",
                          code="model_not_found")
    _refuse_unsupported(req)


def _generation(req: _Body, model: ServedModel, prompt_ids: list[int], max_tokens: int) -> Generation:
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return Generation(
        prompt_ids=prompt_ids,
        max_tokens=_checked("max_tokens", rules.check_max_tokens, max_tokens, model.max_output_len),
        temperature=_checked("temperature", rules.check_temperature, _default(req.temperature, 1.0)),
        top_p=_checked("top_p", rules.check_top_p, _default(req.top_p, 1.0)),
        top_k=_checked("top_k", rules.check_top_k, _default(req.top_k, 0)),
        seed=_checked("seed", rules.check_seed, req.seed),
        stop=tuple(s for s in stops if s),  # an empty stop string stops nothing
        speculative=_default(req.speculative, True),
        stream=_default(req.stream, False),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


def parse_completion(body: dict, model: ServedModel) -> Generation:
    req = _validated(CompletionBody, body)
    _check_model_and_fields(req, model)
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise OpenAIError(f"prompt holds {len(prompt)} prompts: send one per request", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = _text_ids(model, prompt, "prompt", special_tokens=True)  # as the preprocessing model does
    else:
        ids = _checked("prompt", rules.check_prompt_ids, prompt, model.max_input_len, None)
    return _generation(req, model, ids, _default(req.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS))


def parse_chat(body: dict, model: ServedModel) -> Generation:
    req = _validated(ChatBody, body)
    _check_model_and_fields(req, model)
    if not req.messages:
        raise OpenAIError("messages is empty: send at least one message", param="messages")
    if not getattr(model.tokenizer, "chat_template", None):
        raise OpenAIError(f"the model `{model.name}` has no chat template (none in its tokenizer folder): "
                          "use /v1/completions", param="messages")
    messages = []
    for m in req.messages:
        content = m.content if isinstance(m.content, str) or m.content is None else "".join(p.text for p in m.content)
        messages.append({**m.model_dump(exclude_none=True), "content": content or ""})
    try:
        text = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as e:  # noqa: BLE001 - the template's own refusal (raise_exception), in one line
        raise OpenAIError(f"the chat template refused these messages: {' '.join(str(e).split())}",
                          param="messages") from None
    ids = _text_ids(model, text, "messages", special_tokens=False)  # the template writes its own BOS
    max_tokens = next((v for v in (req.max_completion_tokens, req.max_tokens) if v is not None), model.max_output_len)
    return _generation(req, model, ids, max_tokens)
