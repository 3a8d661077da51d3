"""Streamed text with OpenAI's stop-string rule: the text ends just before the first stop string.

The griffin model already stops decoding once the generated text contains a stop string (and keeps it,
as TensorRT-LLM's `stop_words` do); OpenAI's clients expect it left out. While streaming, a tail that
could still become a stop string is held back until the next piece settles it.
"""
from __future__ import annotations


class StopText:
    def __init__(self, stops: tuple[str, ...] = ()):
        self.stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # everything decoded so far, stop string included
        self.sent = 0  # characters handed out
        self.stopped = False

    def add(self, piece: str, last: bool = False) -> str:
        """The text to hand out now for a newly decoded `piece` (`last`: nothing more will come)."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self._longest + 1)  # where a stop string not yet seen may begin
        self.text += piece
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            end = min(found)
        elif last:
            end = len(self.text)
        else:
            end = len(self.text) - self._held_back()
        end = max(end, self.sent)
        out, self.sent = self.text[self.sent:end], end
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that begins some stop string."""
        for k in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
