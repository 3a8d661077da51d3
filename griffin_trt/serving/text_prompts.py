"""Text requests, as TensorRT-LLM's ensemble inputs carry them: settings checked before tokenizing, then
the prompt checked by size, tokenized and checked by length (griffin_trt.request_rules, the CLI's
rules and messages). Shared by the `ensemble` model, which tokenizes in-process, and the
`preprocessing` model, which clients may still call on its own. Stdlib + request_rules; the
tokenizer is passed in.
"""
from __future__ import annotations

from collections.abc import Callable

from .. import request_rules as rules

# Settings refused before any tokenizing (by their ensemble names); griffin checks them again, and
# end_id there, where the model's vocabulary is known.
EARLY_CHECKS = (("temperature", rules.check_temperature), ("top_p", rules.check_top_p),
                ("top_k", rules.check_top_k), ("random_seed", rules.check_seed))


class TextPrompts:
    def __init__(self, tokenizer, max_input_len: int, max_output_len: int):
        self.tokenizer = tokenizer
        self.max_input_len, self.max_output_len = max_input_len, max_output_len
        self.bytes_per_token = rules.max_token_bytes(tokenizer)

    def check_settings(self, tensor: Callable[[str], object]) -> None:
        """`tensor(name)`: the request's array for that ensemble input (numpy), or None when absent."""

        def scalar(name):
            a = tensor(name)
            if a is None:
                return None
            a = a.reshape(-1)
            if a.size != 1:
                raise rules.RequestError(f"{name} must hold one value per request, got {a.size}")
            return a[0]

        n = scalar("max_tokens")
        rules.check_max_tokens(None if n is None else int(n), self.max_output_len)
        for name, check in EARLY_CHECKS:
            v = scalar(name)
            if v is not None:
                check(v.item())

    def encode(self, query) -> list[int]:
        """`query`: the text_input tensor as a numpy array (None when absent) -> checked token ids."""
        if query is None:
            raise rules.RequestError("text_input is required (the prompt)")
        if query.size != 1:
            raise rules.RequestError(f"text_input must hold one string per request, got shape {list(query.shape)}")
        raw = query.reshape(-1)[0]
        if not isinstance(raw, (bytes, str)):
            raise rules.RequestError("text_input must be a string")
        text = rules.check_prompt_text(raw, self.max_input_len, self.bytes_per_token)
        return rules.check_prompt_ids(self.tokenizer(text).input_ids, self.max_input_len, None)
