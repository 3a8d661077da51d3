"""Incremental detokenization without state: the text a chunk of token ids adds after its context.

A streamed response carries its new ids, the last `CONTEXT_TOKENS` ids sent before them (the prompt's
tail for the first chunk) and whether it is the last response. The chunk's text is
`decode(context + new)` minus `decode(context)`, where a trailing unfinished character (byte-level
tokenizers split UTF-8 characters across tokens; it decodes as U+FFFD) is held back on both sides
until a later chunk completes it, or emitted as it is by the last response. The held-back tail is
decided by the last bytes alone, so consecutive chunks agree on where one stopped and the next starts
whatever their context windows, and the chunks concatenate to exactly the unary text (one response,
prompt tail as context, last=True). A window of 8 ids covers any unfinished character (at most 3
bytes, each at least one token) plus the tokens it starts after. Stdlib only.
"""
from __future__ import annotations

CONTEXT_TOKENS = 8
REPLACEMENT = "\ufffd"


def decode(tokenizer, ids) -> str:
    # No clean-up of spaces before punctuation: it would rewrite text already sent.
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _settled(text: str) -> str:
    """The text without a trailing unfinished character (U+FFFD run at the very end)."""
    return text.rstrip(REPLACEMENT)


def continuation_text(tokenizer, context_ids, new_ids, last: bool) -> str:
    """Text that `new_ids` add after `context_ids`; unfinished trailing characters wait unless `last`."""
    context_ids, new_ids = list(context_ids), list(new_ids)
    if not new_ids and not last:
        return ""
    sent = _settled(decode(tokenizer, context_ids))
    full = decode(tokenizer, context_ids + new_ids)
    now = full if last else _settled(full)
    if now.startswith(sent):
        return now[len(sent):]
    # A tokenizer whose decode is not prefix-stable over this window: the chunk on its own.
    alone = decode(tokenizer, new_ids)
    return alone if last else _settled(alone)


def next_context(context_ids, new_ids) -> list[int]:
    """The context for the chunk after `new_ids`."""
    return (list(context_ids) + list(new_ids))[-CONTEXT_TOKENS:]
