"""The embedded demo pair through the real runtime: lossless, not looping, and accepting enough to matter.

Numbers (held-out prompts of griffin_trt/demo/heldout.py, greedy): mean tau with GRIFFIN's default
tree >= 3.5; the target's 64-token continuations have a distinct-4-gram ratio >= 0.6 (they do not
loop); the output equals transformers' own greedy generate token for token.
"""
import dataclasses

import pytest

from griffin_trt.demo.heldout import heldout_prompts
from griffin_trt.demo.make.metrics import distinct_ngram_ratio
from griffin_trt.recipe import TreeConfig, load_recipe
from griffin_trt.runtime import load_runtime
from runtime_helpers import hf_greedy

NEW_TOKENS = 64  # per prompt, for tau
DISTINCT_TOKENS = 64  # the continuation length the distinct-4-gram ratio is taken over


@pytest.fixture(scope="module")
def recipe(repo_root):
    return load_recipe(repo_root / "build" / "demo.toml")


@pytest.fixture(scope="module")
def default_tree_runtime(recipe):
    """GRIFFIN's default tree (10, 5, 60) on the demo pair; the recipe's own tree is the one measured
    fastest on CPU (benchmarks/RESULTS.md)."""
    return load_runtime(dataclasses.replace(recipe, tree=TreeConfig()), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def prompts(default_tree_runtime):
    p = heldout_prompts(default_tree_runtime.tokenizer, n=20)
    assert len(p) == 20
    return p


@pytest.fixture(scope="module")
def default_tree_results(default_tree_runtime, prompts):
    return [default_tree_runtime.decoder.generate([p], NEW_TOKENS)[0] for p in prompts]


def test_default_tree_mean_acceptance_length_at_least_3_5(default_tree_results):
    taus = [r.acceptance_length for r in default_tree_results]
    mean = sum(taus) / len(taus)
    print(f"demo pair: mean acceptance length {mean:.2f} over {len(taus)} held-out prompts (default tree)")
    assert all(len(r.token_ids) == NEW_TOKENS for r in default_tree_results)
    assert mean >= 3.5


def test_greedy_output_equals_transformers_and_does_not_loop(default_tree_runtime, default_tree_results, prompts):
    hf = default_tree_runtime.decoder.ex.pair.target.hf
    eos = sorted(default_tree_runtime.eos_ids)[0]
    ratios = []
    for p, r in zip(prompts, default_tree_results):
        reference = hf_greedy(hf, p, DISTINCT_TOKENS, eos=eos)
        assert r.token_ids[:DISTINCT_TOKENS] == reference
        ratios.append(distinct_ngram_ratio(reference, 4))
    mean = sum(ratios) / len(ratios)
    print(f"demo pair: distinct-4-gram ratio {mean:.3f} of {DISTINCT_TOKENS}-token greedy continuations")
    assert mean >= 0.6


def test_recipe_tree_batched_equals_transformers(recipe, prompts):
    rt = load_runtime(recipe, backend="torch", device="cpu")
    hf = rt.decoder.ex.pair.target.hf
    eos = sorted(rt.eos_ids)[0]
    chunk = prompts[: rt.recipe.limits.max_batch]
    for p, r in zip(chunk, rt.decoder.generate(chunk, 48)):
        assert r.token_ids == hf_greedy(hf, p, 48, eos=eos)


@pytest.fixture(scope="module")
def ort_runtime(recipe, tmp_path_factory):
    """The demo deployment as `make engines` builds it without TensorRT: in-place-flavour graphs."""
    from griffin_trt.builders.build_engines import build
    from griffin_trt.builders.manifest import read_manifest

    out = build(recipe, tmp_path_factory.mktemp("demo") / "out", progress=False, skip_engines=True)
    assert read_manifest(out)["kv_flavour"] == "inplace"
    return load_runtime(recipe, build_dir=out, backend="onnxruntime", device="cpu")


@pytest.mark.parametrize("batch", [1, 4])
def test_demo_pair_inplace_graphs_in_onnxruntime_equal_transformers(default_tree_runtime, ort_runtime, prompts, batch):
    assert ort_runtime.decoder.ex.verify_writes  # every write is checked to be one contiguous run per row
    hf = default_tree_runtime.decoder.ex.pair.target.hf
    eos = sorted(default_tree_runtime.eos_ids)[0]
    chunk_prompts = prompts[:8]
    for i in range(0, len(chunk_prompts), batch):
        chunk = chunk_prompts[i : i + batch]
        for p, r in zip(chunk, ort_runtime.decoder.generate(chunk, 48)):
            assert r.token_ids == hf_greedy(hf, p, 48, eos=eos)
