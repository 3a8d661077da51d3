"""Prompts from the user's corpus, as token ids, in a deterministic order.

Sources: `.jsonl` files (one JSON object per line; its `prompt`, `text` or chat `messages` field) and
plain text files, which are cut into windows of `prompt_tokens` tokens (code and prose corpora
need no preparation). Folders are searched recursively for both, in sorted order.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".c", ".h", ".cc", ".cpp", ".js", ".ts", ".java", ".go", ".rs",
                 ".json", ".html", ".tex", ".sh", ".toml", ".yaml", ".yml"}


class CorpusError(ValueError):
    """A corpus that yields no usable prompt, with the file and the reason."""


def corpus_files(sources: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.suffix == ".jsonl"))
        elif src.is_file():
            files.append(src)
        else:
            raise CorpusError(f"corpus {src} does not exist")
    if not files:
        raise CorpusError(f"no .jsonl or text files found in {', '.join(map(str, sources))}")
    return files


def _jsonl_prompts(path: Path, tokenizer, chat: bool, max_tokens: int) -> list[list[int]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{n}: not valid JSON: {e}") from e
        if "messages" in row:
            msgs = [m for m in row["messages"] if m.get("role") != "assistant"] or row["messages"][:1]
            ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        else:
            text = row.get("prompt", row.get("text"))
            if not isinstance(text, str):
                raise CorpusError(f"{path}:{n}: needs a 'prompt', 'text' or 'messages' field")
            if chat:
                ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                    tokenize=True)
            else:
                ids = tokenizer.encode(text, add_special_tokens=True)
        # transformers 5 returns a BatchEncoding (a Mapping, not a dict) from tokenize=True.
        ids = list(ids["input_ids"] if isinstance(ids, Mapping) else ids)
        if ids:
            out.append(ids[-max_tokens:])
    return out


def _text_windows(texts: list[str], tokenizer, n: int, length: int, g: torch.Generator) -> list[list[int]]:
    """n windows of `length` tokens at random offsets, files weighted by their token counts."""
    docs = [ids for ids in (tokenizer.encode(t, add_special_tokens=False, verbose=False) for t in texts)
            if len(ids) >= length]
    if not docs or n == 0:
        return []
    sizes = torch.tensor([len(d) - length + 1 for d in docs], dtype=torch.float64)
    which = torch.multinomial(sizes, n, replacement=True, generator=g).tolist()
    out = []
    for d in which:
        start = int(torch.randint(0, int(sizes[d]), (1,), generator=g))
        out.append(docs[d][start : start + length])
    return out


def load_prompts(sources: tuple[Path, ...], tokenizer, n: int, prompt_tokens: int, chat: bool,
                 seed: int) -> list[list[int]]:
    """n prompts (fewer if the .jsonl files hold fewer and there is no text), shuffled by `seed`."""
    g = torch.Generator().manual_seed(seed)
    files = corpus_files(sources)
    jsonl = [f for f in files if f.suffix == ".jsonl"]
    texts = [f.read_text(encoding="utf-8", errors="replace") for f in files if f.suffix != ".jsonl"]
    prompts: list[list[int]] = []
    for f in jsonl:
        prompts += _jsonl_prompts(f, tokenizer, chat, prompt_tokens)
    if texts and len(prompts) < n:
        prompts += _text_windows(texts, tokenizer, n - len(prompts), prompt_tokens, g)
    if not prompts:
        raise CorpusError(f"the corpus yields no prompt (text files need at least {prompt_tokens} tokens)")
    order = torch.randperm(len(prompts), generator=g).tolist()
    return [prompts[i] for i in order[:n]]
