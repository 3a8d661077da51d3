"""Incremental detokenization without state: the text a chunk of token ids adds after its context.

A streamed response carries its new ids, the last `CONTEXT_TOKENS` ids sent before them (the prompt's
tail for the first chunk) and whether it is the last response. The chunk's text is the decoded window
`context + new` minus the decoded `context`, both cut where the text is settled:

- byte-level BPE (LLaMA-3, Qwen2, GPT-2) splits UTF-8 characters across tokens and decodes an unfinished
  one as U+FFFD: a trailing U+FFFD run is held back until a later chunk completes it;
- SentencePiece byte fallback (LLaMA-2, Mistral: `<0xE4>`-style tokens) decodes a whole run of byte
  tokens at once and turns all of it into U+FFFD when any character in it is unfinished: a trailing run
  is cut at its last complete character, and the window starts at a token that is not a byte token, so
  no run is split at either end.

Both cuts depend only on the ids, so consecutive chunks agree on where one stopped and the next starts
whatever their windows, and the chunks concatenate to exactly the unary text (one response, prompt tail
as context, last=True); the last response flushes what waited. Stdlib only.
"""
from __future__ import annotations

import re

CONTEXT_TOKENS = 32  # more than any unfinished character or byte-token run a window must reach back over
REPLACEMENT = "\ufffd"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def decode(tokenizer, ids) -> str:
    # No clean-up of spaces before punctuation: it would rewrite text already sent.
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _byte(token) -> int | None:
    m = _BYTE_TOKEN.match(token) if isinstance(token, str) else None
    return int(m.group(1), 16) if m else None


def _window_start(tokens: list) -> int:
    """The first token that is not a byte-fallback token (0 if there is none)."""
    return next((i for i, t in enumerate(tokens) if _byte(t) is None), 0)


def _settled_cut(tokens: list) -> int:
    """len(tokens), less the part of a trailing byte-fallback run after its last complete character."""
    start = len(tokens)
    while start > 0 and _byte(tokens[start - 1]) is not None:
        start -= 1
    run = bytes(_byte(t) for t in tokens[start:])
    for cut in range(len(run), 0, -1):
        try:
            run[:cut].decode("utf-8")
            return start + cut
        except UnicodeDecodeError:
            continue
    return start


def _settled(text: str) -> str:
    """The text without a trailing unfinished character (U+FFFD run at the very end)."""
    return text.rstrip(REPLACEMENT)


def continuation_text(tokenizer, context_ids, new_ids, last: bool) -> str:
    """Text that `new_ids` add after `context_ids`; unfinished trailing characters wait unless `last`."""
    ctx, new = [int(t) for t in context_ids], [int(t) for t in new_ids]
    if not new and not last:
        return ""
    seq = ctx + new
    tokens = tokenizer.convert_ids_to_tokens(seq)
    s = _window_start(tokens[:len(ctx)])
    sent_cut = _settled_cut(tokens[:len(ctx)])
    now_cut = max(sent_cut, _settled_cut(tokens))
    sent = _settled(decode(tokenizer, seq[s:sent_cut]))
    full = decode(tokenizer, seq[s:now_cut])
    # The last response flushes what waited: one U+FFFD per byte of an unfinished byte-token run.
    now = full + REPLACEMENT * (len(seq) - now_cut) if last else _settled(full)
    if now.startswith(sent):
        return now[len(sent):]
    # A tokenizer whose decode is not prefix-stable over this window: the chunk on its own.
    alone = decode(tokenizer, new)
    return alone if last else _settled(alone)


def next_context(context_ids, new_ids) -> list[int]:
    """The context for the chunk after `new_ids`."""
    return (list(context_ids) + list(new_ids))[-CONTEXT_TOKENS:]
