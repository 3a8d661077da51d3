"""Evaluation prompts for the demo pair: windows of standard-library files it never saw in training."""
from __future__ import annotations

import sysconfig
from pathlib import Path

# Held out of tokenizer, target and drafter training (scripts/train_demo.py reads this list).
HELD_OUT = (
    "bisect.py", "colorsys.py", "difflib.py", "fnmatch.py", "glob.py", "heapq.py",
    "json/encoder.py", "shlex.py", "string.py", "textwrap.py",
)
OFFSETS = (200, 900)  # token offsets of the windows taken from each file


def heldout_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / f for f in HELD_OUT if (stdlib / f).is_file()]


def heldout_prompts(tokenizer, n: int = 20, prompt_tokens: int = 128) -> list[list[int]]:
    """Up to n prompts of prompt_tokens ids: OFFSETS windows of every held-out file, in order."""
    out = []
    for f in heldout_files():
        ids = tokenizer.encode(f.read_text(), add_special_tokens=False, verbose=False)
        for start in OFFSETS:
            window = ids[start : start + prompt_tokens]
            if len(window) == prompt_tokens:
                out.append(window)
    return out[:n]
