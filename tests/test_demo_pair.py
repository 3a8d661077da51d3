"""The embedded demo pair through the real runtime: lossless, and accepting enough to matter."""
import pytest

from griffin_trt.demo.heldout import heldout_prompts
from griffin_trt.recipe import load_recipe
from griffin_trt.runtime import load_runtime
from runtime_helpers import hf_greedy


@pytest.fixture(scope="module")
def runtime(repo_root):
    return load_runtime(load_recipe(repo_root / "build" / "demo.toml"), backend="torch", device="cpu")


@pytest.fixture(scope="module")
def prompts(runtime):
    p = heldout_prompts(runtime.tokenizer, n=20)
    assert len(p) == 20
    return p


def test_default_tree_mean_acceptance_length_at_least_2(runtime, prompts):
    tree = runtime.recipe.tree
    assert (tree.top_k, tree.depth, tree.total_tokens) == (10, 5, 60)
    results = runtime.decoder.generate  # greedy, default tree, 128 new tokens per held-out prompt
    taus = [results([p], 128)[0].acceptance_length for p in prompts]
    mean = sum(taus) / len(taus)
    print(f"demo pair: mean acceptance length {mean:.2f} over {len(taus)} held-out prompts")
    assert mean >= 2.0


@pytest.mark.parametrize("batch", [1, 4])
def test_demo_pair_greedy_equals_transformers(runtime, prompts, batch):
    hf = runtime.decoder.ex.pair.target.hf
    eos = sorted(runtime.eos_ids)[0]
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        for p, r in zip(chunk, runtime.decoder.generate(chunk, 48)):
            assert r.token_ids == hf_greedy(hf, p, 48, eos=eos)
