"""Reduced draft vocabulary: the table, its selection, DraftStep's mapping back to target ids, and
losslessness through the loop (greedy token-exact at batch 1 and 4, T > 0 in distribution), from
the recipe through the build, the manifest, onnxruntime and the Triton repository."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from griffin_trt.models.checkpoint import CheckpointError
from griffin_trt.models.draft_vocab import load_draft_vocab, read_token_counts, select_draft_vocab, write_token_counts
from griffin_trt.models.drafter import DrafterConfig, DraftStep, GriffinDrafter
from griffin_trt.recipe import Limits, RecipeError, TreeConfig, recipe_from_dict
from griffin_trt.runtime import SamplingParams, SpeculativeDecoder
from griffin_trt.runtime.executors.torch_executor import TorchExecutor
from runtime_helpers import hf_greedy, random_prompts
from tiny_models import drafter_config, make_drafter, make_target

VOCAB, DRAFT_VOCAB, NEW = 96, 24, 32


def _counts(vocab: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1000, (vocab,), generator=g).tolist()


def _decoder(target, drafter, table, size, tree=TreeConfig(), limits=Limits(max_batch=4, max_input_len=64, max_output_len=64),
             device="cpu"):
    ex = TorchExecutor.from_paths(
        target, drafter, top_k=tree.top_k, target_kv_len=limits.max_seq_len + tree.tree_size,
        drafter_kv_len=limits.max_seq_len + tree.max_accept + tree.drafter_slots, max_batch=limits.max_batch,
        draft_vocab=size, token_counts=table, device=device,
    )
    return SpeculativeDecoder(ex, tree, limits)


def _record_draft_ids(ex) -> list[torch.Tensor]:
    seen, real = [], ex.draft_step

    def step(*args):
        vals, ids, reg = real(*args)
        seen.append(ids)
        return vals, ids, reg

    ex.draft_step = step
    return seen


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("dv")
    t = make_target(d / "t", vocab=VOCAB)
    table = write_token_counts(d / "counts.json", _counts(VOCAB, 0), "random test counts")
    return t, make_drafter(d / "d", target=t, vocab=VOCAB), table


# ------------------------------------------------------------------------------- table + selection


def test_selection_is_most_frequent_ties_to_lower_id_ascending():
    assert select_draft_vocab([5, 0, 5, 9, 1], 3).tolist() == [0, 2, 3]
    assert select_draft_vocab([5, 0, 5, 9, 1], 2).tolist() == [0, 3]
    assert select_draft_vocab([0, 0, 0, 0], 2).tolist() == [0, 1]
    assert select_draft_vocab([1, 2, 3], 3).tolist() == [0, 1, 2]
    for bad in (0, 4):
        with pytest.raises(CheckpointError, match=r"draft_vocab = \d must be in \[1, 3\]"):
            select_draft_vocab([1, 2, 3], bad)


def test_table_round_trip_and_refusals(tmp_path):
    path = write_token_counts(tmp_path / "c.json", [3, 0, 7], "unit test")
    assert read_token_counts(path) == [3, 0, 7]
    data = json.loads(path.read_text())
    assert data["vocab_size"] == 3 and data["counted_tokens"] == 10 and data["source"] == "unit test"
    assert load_draft_vocab(path, 1, vocab_size=3).tolist() == [2]
    with pytest.raises(CheckpointError, match="counts 3 token ids but the target's vocabulary has 5"):
        load_draft_vocab(path, 1, vocab_size=5)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_token_counts(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"counts": [1]}))
    with pytest.raises(CheckpointError, match="not a griffin-trt token-counts file"):
        read_token_counts(tmp_path / "other.json")
    with pytest.raises(ValueError, match="non-negative"):
        write_token_counts(tmp_path / "neg.json", [1, -1], "bad")


# ------------------------------------------------------------------------------------- DraftStep


@torch.no_grad()
def test_draft_step_maps_the_reduced_top_k_back_to_target_ids():
    torch.manual_seed(0)
    cfg = DrafterConfig.from_dict(drafter_config(vocab=VOCAB))
    drafter = GriffinDrafter(cfg).eval()
    head = torch.nn.Linear(cfg.hidden_size, VOCAB, bias=False)
    ids = torch.tensor(sorted(torch.randperm(VOCAB)[:DRAFT_VOCAB].tolist()))
    b, t, s = 2, 3, 8
    args = (torch.randn(b, t, cfg.hidden_size), torch.randint(0, VOCAB, (b, t)), torch.arange(t).expand(b, t),
            torch.arange(t).expand(b, t), torch.ones(b, t, s, dtype=torch.bool))

    def run(step):
        return step(*args, *drafter.new_cache(b, s))

    full_vals, full_ids, reg, *_ = run(DraftStep(drafter, head, 4))
    same_vals, same_ids, *_ = run(DraftStep(drafter, head, 4, torch.arange(VOCAB)))
    assert torch.equal(full_ids, same_ids) and torch.allclose(full_vals, same_vals)

    vals, out_ids, reg2, *_ = run(DraftStep(drafter, head, 4, ids))
    assert torch.equal(reg, reg2)  # the regressed feature does not depend on the head
    assert set(out_ids.flatten().tolist()) <= set(ids.tolist())
    # the same ranking as the full head's logits restricted to those ids, renormalised over them
    out_hidden = drafter(*args, *drafter.new_cache(b, s))[0]
    sub = torch.log_softmax(head(out_hidden)[..., ids].float(), -1)
    ref_vals, ref_pos = sub.topk(4, -1)
    assert torch.equal(out_ids, ids[ref_pos]) and torch.allclose(vals, ref_vals)

    with pytest.raises(ValueError, match="fewer than top_k"):
        DraftStep(drafter, head, 4, ids[:3])
    with pytest.raises(ValueError, match="distinct and in"):
        DraftStep(drafter, head, 4, torch.tensor([0, 1, 2, VOCAB]))
    with pytest.raises(ValueError, match="distinct and in"):
        DraftStep(drafter, head, 4, torch.tensor([0, 1, 2, 2]))


# ------------------------------------------------------------------------------- through the loop


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("batch", [1, 4])
def test_reduced_vocab_greedy_is_token_exact(pair, batch, device):
    """On CUDA: CUDA-graphed drafter with the reduced head, Triton tree kernels."""
    target, drafter, table = pair
    dec = _decoder(target, drafter, table, DRAFT_VOCAB, device=device)
    allowed = set(load_draft_vocab(table, DRAFT_VOCAB).tolist())
    seen = _record_draft_ids(dec.ex)
    hf = dec.ex.pair.target.hf
    prompts = random_prompts(8, VOCAB, seed=20 + batch)
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        for p, r in zip(chunk, dec.generate(chunk, NEW)):
            assert r.token_ids == hf_greedy(hf, p, NEW)
    drafted = set(torch.cat([s.flatten() for s in seen]).tolist())
    assert drafted <= allowed and len(drafted) > 4


def test_reduced_vocab_samples_the_target_distribution(tmp_path):
    """The chi-square test of test_sampling.py with 5 of 8 ids draftable: the other 3 can only come
    out as bonus tokens after every draft is rejected, which this exercises on purpose."""
    import test_sampling as ts

    t = make_target(tmp_path / "t", vocab=ts.VOCAB, seed=2)
    d = make_drafter(tmp_path / "d", target=t, vocab=ts.VOCAB)
    table = write_token_counts(tmp_path / "c.json", [9, 1, 8, 7, 2, 6, 5, 3], "test")
    dec = _decoder(t, d, table, 5, tree=TreeConfig(top_k=4, depth=2, total_tokens=12),
                   limits=Limits(max_batch=ts.BATCH, max_input_len=8, max_output_len=4))
    seen = _record_draft_ids(dec.ex)
    for sp in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_p=0.9)):
        stat = ts.chi2(dec, sp)
        assert stat < ts.CHI2_CRIT_DF7, f"chi-square {stat:.1f}: emitted tokens do not follow the target"
    assert set(torch.cat([s.flatten() for s in seen]).tolist()) <= {0, 2, 3, 5, 6}


# ------------------------------------------------------------------------- recipe, build, serving


def test_recipe_fields_and_refusals(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "d").mkdir()
    write_token_counts(tmp_path / "c.json", [1] * 16, "test")
    base = {"model": {"target": "t", "drafter": "d"}, "tree": {"top_k": 4, "depth": 2, "total_tokens": 8}}

    def parse(**model):
        return recipe_from_dict({**base, "model": {**base["model"], **model}}, base=tmp_path)

    r = parse(draft_vocab=8, token_counts="c.json")
    assert r.draft_vocab == 8 and r.token_counts == (tmp_path / "c.json").resolve()
    assert parse().draft_vocab is None and parse().token_counts is None
    for model, msg in [
        (dict(draft_vocab=8), "draft_vocab needs \\[model\\] token_counts"),
        (dict(token_counts="c.json"), "token_counts is only used with"),
        (dict(draft_vocab=3, token_counts="c.json"), "smaller than the tree's top_k = 4"),
        (dict(draft_vocab=0, token_counts="c.json"), "draft_vocab = 0 is out of range"),
        (dict(draft_vocab=8, token_counts="nope.json"), "token_counts = 'nope.json' does not exist"),
    ]:
        with pytest.raises(RecipeError, match=msg):
            parse(**model)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from griffin_trt.builders import build_engines as be
    from griffin_trt.recipe import load_recipe
    from test_build import RECIPE, make_tokenizer

    root = tmp_path_factory.mktemp("dvbuild")
    t = make_target(root / "target", vocab=VOCAB, eos=2)
    make_tokenizer(t)
    make_drafter(root / "drafter", target=t, vocab=VOCAB)
    write_token_counts(root / "counts.json", _counts(VOCAB, 3), "test")
    text = RECIPE.format(drafter="drafter", backend="onnxruntime").replace(
        'drafter = "drafter"\n', 'drafter = "drafter"\ndraft_vocab = 12\ntoken_counts = "counts.json"\n'
    )
    (root / "recipe.toml").write_text(text)
    recipe = load_recipe(root / "recipe.toml")
    return recipe, be.build(recipe, progress=False, onnx_exporter="torchscript")


def test_build_records_the_table_and_onnxruntime_drafts_from_it(built):
    from griffin_trt.builders.manifest import read_manifest
    from griffin_trt.runtime import load_runtime

    recipe, out = built
    m = read_manifest(out, verify_hashes=True)
    assert m["draft_vocab"] == 12 and m["files"]["token_counts"] == "token_counts.json"
    assert "token_counts.json" in m["sha256"]
    assert (out / "token_counts.json").read_bytes() == Path(recipe.token_counts).read_bytes()

    rt = load_runtime(recipe, build_dir=out, backend="onnxruntime", device="cpu")
    seen = _record_draft_ids(rt.decoder.ex)
    hf = TorchExecutor.from_paths(recipe.target, recipe.drafter, top_k=4, target_kv_len=64, drafter_kv_len=64).pair.target.hf
    prompts = random_prompts(4, VOCAB, seed=8, max_len=12)
    for i in range(0, 4, 2):
        for p, r in zip(prompts[i : i + 2], rt.decoder.generate(prompts[i : i + 2], 16)):
            assert r.token_ids == hf_greedy(hf, p, 16, eos=2)
    allowed = set(load_draft_vocab(recipe.token_counts, 12).tolist())
    assert set(torch.cat([s.flatten() for s in seen]).tolist()) <= allowed


def test_runtime_refuses_a_build_made_with_another_draft_vocabulary(built, tmp_path):
    import dataclasses

    from griffin_trt.runtime import load_runtime

    recipe, out = built
    with pytest.raises(ValueError, match="built with draft_vocab = 12 but the recipe says 16"):
        load_runtime(dataclasses.replace(recipe, draft_vocab=16), build_dir=out, backend="onnxruntime", device="cpu")
    with pytest.raises(ValueError, match="built with draft_vocab = 12 but the recipe says None"):
        load_runtime(dataclasses.replace(recipe, draft_vocab=None, token_counts=None), build_dir=out,
                     backend="onnxruntime", device="cpu")
    other = write_token_counts(tmp_path / "other.json", _counts(VOCAB, 4), "another table")
    with pytest.raises(ValueError, match="another token-counts table"):
        load_runtime(dataclasses.replace(recipe, token_counts=other), build_dir=out, backend="onnxruntime", device="cpu")


def test_triton_repository_carries_the_draft_vocabulary(built):
    from griffin_trt.serving.repository import fill_repository

    recipe, out = built
    repo = fill_repository(recipe, out)
    again = recipe_from_dict(json.loads((repo / "griffin" / "recipe.json").read_text()), base=repo / "griffin")
    assert again.draft_vocab == 12 and again.token_counts == Path(recipe.token_counts).resolve()
    assert 'key: "draft_vocab" value: { string_value: "12" }' in (repo / "griffin" / "config.pbtxt").read_text()


def test_cli_counts_a_corpus_and_the_targets_generations(built, tmp_path):
    from griffin_trt.cli import main

    recipe, _ = built
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text("w5 w5 w7")
    (corpus / "sub" / "b.txt").write_text("w5 w9")
    (corpus / "skip.txt").write_text("w11 w11 w11")
    out = tmp_path / "counts.json"
    assert main(["draft-vocab", "--recipe", str(recipe.source), "--corpus", str(corpus), "--glob", "*.txt",
                 "--exclude", "skip.txt", "--out", str(out), "--quiet"]) == 0
    counts = read_token_counts(out)
    assert len(counts) == VOCAB and sum(counts) == 5
    assert (counts[5], counts[7], counts[9], counts[11]) == (3, 1, 1, 0)

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ("w3 w4 w5", "w10 w20")) + "\n")
    assert main(["draft-vocab", "--recipe", str(recipe.source), "--from-target", "--prompts", str(prompts),
                 "--max-new-tokens", "6", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    from griffin_trt.models import load_tokenizer

    tok = load_tokenizer(recipe.tokenizer)
    hf = TorchExecutor.from_paths(recipe.target, recipe.drafter, top_k=4, target_kv_len=64, drafter_kv_len=64).pair.target.hf
    expected = [0] * VOCAB
    for p in ("w3 w4 w5", "w10 w20"):
        for t in hf_greedy(hf, tok.encode(p), 6, eos=2):
            expected[t] += 1
    assert read_token_counts(out) == expected
    assert main(["draft-vocab", "--recipe", str(recipe.source), "--out", str(out)]) == 2  # no source named
