"""The demo corpus: this Python's own standard-library sources, minus the held-out files."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from ..heldout import HELD_OUT

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources() -> list[str]:
    """Relative paths of the stdlib's .py files outside test folders, sorted."""
    root = stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("test"))
        out += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                if f.endswith(".py") and not f.startswith("test")]
    return sorted(out)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def training_texts(max_file_chars: int, max_chars: int | None = None) -> tuple[list[str], list[str]]:
    """(file names, texts) of the training corpus: every non-empty source up to max_file_chars
    (huge generated tables teach little), held-out files excluded, in sorted order."""
    root = stdlib_root()
    names, texts, total = [], [], 0
    for f in stdlib_sources():
        if f in HELD_OUT:
            continue
        text = read_text(root / f)
        if not text.strip() or len(text) > max_file_chars:
            continue
        if max_chars is not None and total + len(text) > max_chars:
            break
        names.append(f)
        texts.append(text)
        total += len(text)
    return names, texts
