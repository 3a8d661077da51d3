"""Smoke test of scripts/train_demo.py: the --quick run writes a pair the project's loaders accept."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo", REPO / "scripts" / "train_demo.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(180)
def test_quick_run_loads_with_load_pair(tmp_path):
    threads = torch.get_num_threads()
    try:
        info = _load_script().main(["--quick", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)

    from griffin_trt.models import load_pair, load_tokenizer

    tdir, ddir = tmp_path / "target", tmp_path / "drafter"
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (tdir / name).is_file(), name
    assert (tmp_path / "README.md").is_file()

    pair = load_pair(tdir, ddir, top_k=4)
    assert pair.target.dtype == torch.float32
    assert next(pair.drafter.parameters()).dtype == torch.float32
    dcfg = json.loads((ddir / "config.json").read_text())
    assert dcfg["num_hidden_layers"] == 1 and dcfg["num_key_value_heads"] == dcfg["num_attention_heads"]
    assert dcfg["hidden_size"] == pair.target.hidden_size and dcfg["vocab_size"] == pair.target.vocab_size

    # the drafter file holds exactly the GriffinDrafter state dict, embed_tokens included
    from safetensors.torch import load_file

    stored = load_file(str(ddir / "model.safetensors"))
    assert set(stored) == set(pair.drafter.state_dict())
    assert "embed_tokens.weight" in stored

    tok = load_tokenizer(tdir)
    ids = tok("def f(x):\n    return x\n").input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.eos_token_id == pair.target.config.eos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "def f(x):\n    return x\n"
    assert info["eval"]["chain_tau_top1"] >= 1.0

    # one drafter step through DraftStep runs on the loaded pair
    T = 5
    feats = torch.randn(1, T, pair.target.hidden_size)
    toks = torch.tensor([ids[1 : T + 1]])
    pos = torch.arange(T)[None]
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None]
    k, v = pair.drafter.new_cache(1, T)
    vals, top, reg, _, _ = pair.draft_step(feats, toks, pos, pos, mask, k, v)
    assert top.shape == (1, T, 4) and reg.shape == (1, T, pair.target.hidden_size)
