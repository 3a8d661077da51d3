"""A tiny target with a tokenizer (character level), for end-to-end runs of `griffin-trt train`."""
from __future__ import annotations

import string
from pathlib import Path

from tiny_models import make_target

CHARS = sorted(set(string.printable) - {"\x0b", "\x0c"})


def make_char_tokenizer(folder: Path) -> int:
    """Save a character-level fast tokenizer (<s>=0, </s>=1, <unk>=2) into folder; returns its size."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    hf.save_pretrained(folder)
    return len(vocab)


def make_target_with_tokenizer(folder: Path, family: str = "llama", seed: int = 0) -> Path:
    folder = Path(folder)
    make_target(folder, family=family, vocab=128, hidden=32, layers=2, seed=seed, eos=1)
    make_char_tokenizer(folder)
    return folder


def write_corpus(folder: Path, n_files: int = 6) -> Path:
    """Small text files (this repository's own sources would change; stdlib text is fixed)."""
    import sysconfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("bisect.py", "colorsys.py", "fnmatch.py", "heapq.py", "shlex.py", "textwrap.py")[:n_files]:
        (folder / name.replace(".py", ".txt")).write_text((stdlib / name).read_text())
    return folder
