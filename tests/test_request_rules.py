"""Shared request rules (CLI == server), sound sampling at tiny temperatures, incremental detokenization,
corrupt checkpoints and the CLI's one-line errors."""
from __future__ import annotations

import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from byte_bpe import MULTILINGUAL, make_byte_bpe_tokenizer, make_byte_fallback_tokenizer
from griffin_trt import request_rules as rules
from griffin_trt.detokenize import CONTEXT_TOKENS, continuation_text, decode, next_context
from griffin_trt.runtime import SamplingParams
from griffin_trt.tree.accept import process_logits

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ rules


@pytest.mark.parametrize("t", [float("inf"), float("-inf"), float("nan"), -1e-9])
def test_temperature_must_be_finite_and_non_negative(t):
    with pytest.raises(rules.RequestError, match=r"^temperature must be a finite number >= 0, got"):
        SamplingParams(temperature=t).validate()


def test_end_id_minus_one_is_none_and_out_of_range_is_refused():
    assert rules.check_end_id(-1, 100) is None and rules.check_end_id(None, 100) is None
    assert rules.check_end_id(99, 100) == 99
    for bad in (100, -2, 2**32 + 1):
        with pytest.raises(rules.RequestError, match=r"end_id must be a token id in \[0, 100\) or -1 \(none\)"):
            rules.check_end_id(bad, 100)


def test_other_rules():
    with pytest.raises(rules.RequestError, match=r"max_tokens must be in \[1, 8\], got 9"):
        rules.check_max_tokens(9, 8)
    with pytest.raises(rules.RequestError, match="max_tokens is required"):
        rules.check_max_tokens(None, 8)
    with pytest.raises(rules.RequestError, match=r"random_seed must be in \[0, 2\*\*64\)"):
        rules.check_seed(-1)
    with pytest.raises(rules.RequestError, match=r"top_p must be in \(0, 1\]"):
        rules.check_top_p(float("nan"))
    with pytest.raises(rules.RequestError, match="the prompt is empty"):
        rules.check_prompt_text(" \n\t", 16, 4)
    with pytest.raises(rules.RequestError, match="not valid UTF-8"):
        rules.check_prompt_text(b"\xff\xfe", 16, 4)


def test_prompt_byte_bound_is_checked_before_tokenizing():
    tok = make_byte_bpe_tokenizer()
    per_token = rules.max_token_bytes(tok)
    # the bound never refuses a text that fits: every token spells at most per_token bytes
    assert max(len(decode(tok, [i]).encode()) for i in range(len(tok))) <= per_token
    limit = rules.prompt_byte_limit(8, per_token)
    assert rules.check_prompt_text("a" * limit, 8, per_token)
    with pytest.raises(rules.RequestError, match=rf"the prompt is {limit + 1} bytes, more than the {limit} bytes"):
        rules.check_prompt_text("a" * (limit + 1), 8, per_token)


# ------------------------------------------------------------------ sampling numerics


@pytest.mark.parametrize("t", [1e-38, 1e-45, 5e-324, 1e-3])
def test_tiny_temperatures_give_sound_probabilities(t):
    torch.manual_seed(0)
    logits = torch.randn(4, 64) * 30
    logits[1, 7] = logits[1].max()  # a tie for the best token
    for top_p, top_k in ((1.0, 0), (0.9, 5)):
        p = process_logits(logits, t, top_p, top_k)
        assert torch.isfinite(p).all() and torch.allclose(p.sum(-1), torch.ones(4))
        best = logits.argmax(-1)
        if t < 1e-30:  # below float32 resolution: all mass on the best token(s), as greedy would pick
            assert torch.equal(p.argmax(-1), best)
            assert p[1, 7] == pytest.approx(0.5) and p[0].max() == 1.0
    assert torch.allclose(process_logits(logits, 0.7), torch.softmax(logits / 0.7, -1), atol=1e-6)


# ------------------------------------------------------------------ incremental detokenization


def _stream(tok, prompt, gen, rng):
    ctx, chunks, i = prompt[-CONTEXT_TOKENS:], [], 0
    while i < len(gen):
        n = rng.randint(1, 4)
        piece = gen[i:i + n]
        i += n
        chunks.append(continuation_text(tok, ctx, piece, last=False))
        ctx = next_context(ctx, piece)
    chunks.append(continuation_text(tok, ctx, [], last=True))
    return chunks


TOKENIZERS = {"byte-level BPE": make_byte_bpe_tokenizer, "SentencePiece byte fallback": make_byte_fallback_tokenizer}
TEXT = MULTILINGUAL + "\n中文 字符\n" + MULTILINGUAL


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_streamed_chunks_concatenate_to_the_unary_text(kind):
    tok = TOKENIZERS[kind]()
    ids = tok(TEXT).input_ids
    rng = random.Random(0)
    split_a_character = 0
    for _ in range(300):
        cut = rng.randrange(1, len(ids))
        prompt, gen = ids[:cut], ids[cut:]
        unary = continuation_text(tok, prompt[-CONTEXT_TOKENS:], gen, last=True)
        chunks = _stream(tok, prompt, gen, rng)
        assert "".join(chunks) == unary
        assert "\ufffd" not in unary  # no broken character, at any chunk boundary or window start
        split_a_character += any(len(c) == 0 for c in chunks[:-1])
    assert split_a_character > 50  # the hold-back really happened (chunks that ended inside a character)


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_generation_that_stops_inside_a_character(kind):
    """max_tokens can end a request mid-character: stream and unary flush the same replacement."""
    tok = TOKENIZERS[kind]()
    ids = tok(TEXT).input_ids
    for end in range(4, len(ids)):
        prompt, gen = ids[:3], ids[3:end]
        ctx, chunks = prompt, []
        for t in gen:
            chunks.append(continuation_text(tok, ctx, [t], last=False))
            ctx = next_context(ctx, [t])
        chunks.append(continuation_text(tok, ctx, [], last=True))
        assert "".join(chunks) == continuation_text(tok, prompt, gen, last=True)


def test_random_ids_stream_like_unary_including_invalid_bytes():
    tok = make_byte_bpe_tokenizer()
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.randrange(len(tok)) for _ in range(rng.randint(2, 30))]
        cut = rng.randrange(1, len(ids))
        unary = continuation_text(tok, ids[:cut][-CONTEXT_TOKENS:], ids[cut:], last=True)
        assert "".join(_stream(tok, ids[:cut], ids[cut:], rng)) == unary


# ------------------------------------------------------------------ checkpoints


def test_truncated_weights_are_a_checkpoint_error(tmp_path):
    from tiny_models import make_drafter

    from griffin_trt.models.checkpoint import CheckpointError, read_weights

    d = make_drafter(tmp_path / "drafter")
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors: cannot read the weights .*truncated or corrupt"):
        read_weights(d)


# ------------------------------------------------------------------ CLI: one line, the server's messages


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from tiny_models import make_drafter, make_target

    root = tmp_path_factory.mktemp("cli")
    target = make_target(root / "target", vocab=300)
    make_byte_bpe_tokenizer(target)
    make_drafter(root / "drafter", target=target, vocab=300)
    return root


def _cli(pair, *args, timeout=300):
    cmd = [sys.executable, "-m", "griffin_trt.cli", "generate", "--target", str(pair / "target"),
           "--drafter", str(pair / "drafter"), "--max-new-tokens", "4", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _one_line_error(r, message):
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and "it/s]" not in x]  # minus progress bars
    assert len(lines) == 1 and lines[0].startswith("griffin-trt generate: error: ") and message in lines[0], lines


def test_cli_refuses_what_the_server_refuses_with_the_same_message(pair):
    cases = {
        ("--prompt", "hi", "--temperature", "inf"): "temperature must be a finite number >= 0, got inf",
        ("--prompt", " "): "the prompt is empty: send a non-empty prompt",
        ("--prompt", "hi", "--end-id", "300"): "end_id must be a token id in [0, 300) or -1 (none), got 300",
        ("--prompt", "hi", "--top-p", "0"): "top_p must be in (0, 1], got 0.0",
    }
    for args, message in cases.items():
        _one_line_error(_cli(pair, *args), message)


def test_cli_tiny_temperature_and_end_id_none_work(pair):
    r = _cli(pair, "--prompt", "héllo", "--temperature", "1e-38", "--end-id", "-1", "--json", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert '"token_ids"' in r.stdout


def test_cli_one_line_errors_for_device_and_corrupt_drafter(pair, tmp_path):
    if not torch.cuda.is_available():
        _one_line_error(_cli(pair, "--prompt", "hi", "--device", "cuda"), "torch sees no CUDA GPU")
    import shutil

    bad = tmp_path / "drafter"
    shutil.copytree(pair / "drafter", bad)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    r = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "generate", "--target", str(pair / "target"),
                        "--drafter", str(bad), "--prompt", "hi"], capture_output=True, text=True, timeout=300, cwd=REPO)
    _one_line_error(r, "truncated or corrupt")


def test_cli_client_to_a_closed_port_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        for _ in range(3):  # the failure used to race between two code paths
            r = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "client", "--url", f"127.0.0.1:{port}",
                                "--prompt", "hi"], capture_output=True, text=True, timeout=120, cwd=REPO)
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            assert len(lines) == 1 and lines[0].startswith("griffin-trt client: error:"), lines


def test_keyboard_interrupt_is_one_line(monkeypatch, capsys):
    from griffin_trt import cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        action.set_defaults(func=interrupted)
    assert cli.main(["bench", "--url", "127.0.0.1:1"]) == 130
    assert capsys.readouterr().err.strip() == "griffin-trt bench: interrupted"
