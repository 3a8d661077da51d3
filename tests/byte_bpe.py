"""A byte-level BPE tokenizer (GPT-2 / LLaMA-3 / Qwen2 style) trained offline on a few multilingual lines:
its tokens split UTF-8 characters, which is what incremental detokenization must survive."""
from __future__ import annotations

from pathlib import Path

MULTILINGUAL = "héllo wörld ✓ 日本語 🙂🎉 naïve café — 中文字符 テスト 한국어 😀"
CORPUS = [MULTILINGUAL, "plain ascii text, with punctuation!", "def f(x):\n    return x * 2", "ünïcödé — ✓✓ 🙂"] * 4


def make_byte_bpe_tokenizer(folder: Path | None = None, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    if folder is not None:
        tok.save_pretrained(str(folder))
    return tok


def make_byte_fallback_tokenizer(vocab_size: int = 200):
    """A LLaMA-2 / Mistral style SentencePiece BPE: '▁' for spaces, `<0xNN>` byte tokens for what the
    vocabulary lacks (the CJK text here, newlines), decoded a whole byte run at a time."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    latin = [line for line in CORPUS if "日" not in line]
    tk.train_from_iterator(latin, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                                      show_progress=False))
    spec = json.loads(tk.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte tokens are ordinary vocabulary entries, as in LLaMA-2's tokenizer
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
