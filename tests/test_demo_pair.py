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


@pytest.fixture(scope="module")
def ort_runtime(repo_root, tmp_path_factory):
    """The demo deployment as `make engines` builds it without TensorRT: in-place-flavour graphs."""
    from griffin_trt.builders.build_engines import build
    from griffin_trt.builders.manifest import read_manifest

    recipe = load_recipe(repo_root / "build" / "demo.toml")
    out = build(recipe, tmp_path_factory.mktemp("demo") / "out", progress=False, skip_engines=True)
    assert read_manifest(out)["kv_flavour"] == "inplace"
    return load_runtime(recipe, build_dir=out, backend="onnxruntime", device="cpu")


@pytest.mark.parametrize("batch", [1, 4])
def test_demo_pair_inplace_graphs_in_onnxruntime_equal_transformers(runtime, ort_runtime, prompts, batch):
    assert ort_runtime.decoder.ex.verify_writes  # every write is checked to be one contiguous run per row
    hf = runtime.decoder.ex.pair.target.hf
    eos = sorted(runtime.eos_ids)[0]
    chunk_prompts = prompts[:8]
    for i in range(0, len(chunk_prompts), batch):
        chunk = chunk_prompts[i : i + batch]
        for p, r in zip(chunk, ort_runtime.decoder.generate(chunk, 48)):
            assert r.token_ids == hf_greedy(hf, p, 48, eos=eos)
