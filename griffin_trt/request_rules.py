"""Which request values are accepted: one set of rules for `griffin-trt generate` and the server.

The CLI, the `preprocessing` and the `griffin` Triton models all call these functions, so they accept
and refuse the same values with the same one-line messages (a `RequestError` names the setting, its
allowed range and the value received). Stdlib only: the Triton models import it without torch.
"""
from __future__ import annotations

import math

UINT64_LIMIT = 2**64
END_ID_NONE = -1  # TensorRT-LLM clients send end_id = -1 for "no end token"
MIN_BYTES_PER_TOKEN = 4  # a UTF-8 character: the least a byte bound may allow per token


class RequestError(ValueError):
    """A request value outside what is accepted; the message is one line naming it."""


def check_temperature(t: float) -> float:
    """Any finite T >= 0 (0: greedy). Sampling subtracts the row maximum first, so tiny T is sound."""
    t = float(t)
    if not (math.isfinite(t) and t >= 0.0):
        raise RequestError(f"temperature must be a finite number >= 0, got {t}")
    return t


def check_top_p(p: float) -> float:
    p = float(p)
    if not 0.0 < p <= 1.0:  # also refuses NaN
        raise RequestError(f"top_p must be in (0, 1], got {p}")
    return p


def check_top_k(k: int) -> int:
    k = int(k)
    if k < 0:
        raise RequestError(f"top_k must be >= 0 (0: off), got {k}")
    return k


def check_seed(seed: int | None) -> int | None:
    if seed is None:
        return None
    seed = int(seed)
    if not 0 <= seed < UINT64_LIMIT:
        raise RequestError(f"random_seed must be in [0, 2**64), got {seed}")
    return seed


def check_max_tokens(n: int | None, max_output_len: int) -> int:
    if n is None:
        raise RequestError("max_tokens is required (the number of tokens to generate)")
    n = int(n)
    if not 1 <= n <= max_output_len:
        raise RequestError(f"max_tokens must be in [1, {max_output_len}], got {n}")
    return n


def check_end_id(end_id: int | None, vocab_size: int) -> int | None:
    """A stop token id in [0, vocab_size); -1 (TensorRT-LLM's "none") and None mean no extra stop token."""
    if end_id is None or int(end_id) == END_ID_NONE:
        return None
    end_id = int(end_id)
    if not 0 <= end_id < vocab_size:
        raise RequestError(f"end_id must be a token id in [0, {vocab_size}) or -1 (none), got {end_id}")
    return end_id


def max_token_bytes(tokenizer) -> int:
    """The most UTF-8 bytes one token of this tokenizer's vocabulary spells (at least 4).

    Token strings spell at least as many UTF-8 bytes as the text they stand for (byte-level BPE maps
    each byte to a 1-2 byte character, SentencePiece writes a space as the 3-byte '▁' and a fallback
    byte as '<0xNN>'), so a text longer than max_input_len times this cannot fit in max_input_len tokens.
    """
    try:
        vocab = tokenizer.get_vocab()
    except (AttributeError, NotImplementedError):
        return MIN_BYTES_PER_TOKEN
    longest = max((len(str(t).encode("utf-8")) for t in vocab), default=0)
    return max(MIN_BYTES_PER_TOKEN, longest)


def prompt_byte_limit(max_input_len: int, bytes_per_token: int) -> int:
    return int(max_input_len) * max(MIN_BYTES_PER_TOKEN, int(bytes_per_token))


def check_prompt_text(text: str | bytes, max_input_len: int, bytes_per_token: int) -> str:
    """Size first (no tokenizing, no decoding of an oversized text), then UTF-8, then non-empty."""
    limit = prompt_byte_limit(max_input_len, bytes_per_token)
    size = len(text) if isinstance(text, (bytes, bytearray)) else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise RequestError(
            f"the prompt is {size} bytes, more than the {limit} bytes that max_input_len = {max_input_len} tokens "
            f"can hold (at most {bytes_per_token} bytes per token with this tokenizer); refused before tokenizing"
        )
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("the prompt is not valid UTF-8") from None
    if not text.strip():
        raise RequestError("the prompt is empty: send a non-empty prompt")
    return text


def check_prompt_ids(ids, max_input_len: int, vocab_size: int | None) -> list[int]:
    ids = [int(t) for t in ids]
    if not ids:
        raise RequestError("the prompt is empty: send at least one input token")
    if len(ids) > max_input_len:
        raise RequestError(f"the prompt is {len(ids)} tokens, longer than max_input_len = {max_input_len}")
    if vocab_size is not None and (min(ids) < 0 or max(ids) >= vocab_size):
        raise RequestError(f"input_ids must be token ids in [0, {vocab_size})")
    return ids
