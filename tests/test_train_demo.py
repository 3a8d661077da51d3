"""scripts/train_demo.py --quick: the whole demo recipe (corpus, tokenizer, target pre-training,
`griffin-trt train` for the drafter, evaluation, README) at toy sizes, and reproducible bit for bit."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = ("target/model.safetensors", "target/config.json", "target/tokenizer.json", "drafter/model.safetensors",
               "drafter/config.json")


def _run(out: Path) -> dict:
    spec = importlib.util.spec_from_file_location("train_demo", REPO / "scripts" / "train_demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        return mod.main(["--quick", "--out", str(out), "--work", str(out / "work"), "--threads", "1", "--quiet"])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return [(_run(p), p) for p in (tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b"))]


def test_quick_run_writes_a_pair_the_runtime_loads(runs):
    info, out = runs[0]
    from griffin_trt.models import load_pair, load_tokenizer

    tdir, ddir = out / "target", out / "drafter"
    for name in MODEL_FILES + ("target/generation_config.json", "target/tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    pair = load_pair(tdir, ddir, top_k=4)
    assert pair.target.dtype == torch.float32 and pair.target.num_layers == info["settings"]["target"]["num_layers"]
    dcfg = json.loads((ddir / "config.json").read_text())
    assert dcfg["num_hidden_layers"] == 1 and dcfg["hidden_size"] == pair.target.hidden_size
    tok = load_tokenizer(tdir)
    ids = tok("def f(x):\n    return x\n").input_ids
    assert ids[0] == tok.bos_token_id and tok.eos_token_id == pair.target.config.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "def f(x):\n    return x\n"
    # the drafter came out of griffin-trt train with its three stages, and was evaluated
    assert [s["passes"] for s in info["drafter_train"]["stages"]] == [1, 2, 3]
    assert info["eval"]["mean_tau"] >= 1.0 and 0.0 < info["distinct_4gram_mean"] <= 1.0
    assert info["step_cost"]["step_ms"] > 0
    readme = (out / "README.md").read_text()
    assert "scripts/train_demo.py --quick" in readme and f"tau {info['eval']['mean_tau']:.2f}" in readme


def test_quick_run_is_reproducible_bit_for_bit(runs):
    (a, _), (b, _) = runs
    for name in MODEL_FILES:
        assert a["files"][name]["sha256"] == b["files"][name]["sha256"], name
    assert a["eval"]["mean_tau"] == b["eval"]["mean_tau"]
