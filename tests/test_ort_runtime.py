"""The decoding loop over exported in-place-flavour graphs in onnxruntime (the graphs TensorRT parses):
token-exact with transformers' greedy output, for random tiny LLaMA and Qwen2 pairs, batch 1 and 4,
dynamic, chain and static trees. The executor checks every call's write_index is one contiguous run
per row (what TensorScatter writes), so these runs also prove the loop only makes such writes."""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from griffin_trt.builders.export_onnx import export_drafter, export_target  # noqa: E402
from griffin_trt.models import load_pair  # noqa: E402
from griffin_trt.recipe import Limits, TreeConfig  # noqa: E402
from griffin_trt.runtime import SpeculativeDecoder  # noqa: E402
from griffin_trt.runtime.executors.ort_executor import OrtExecutor  # noqa: E402
from runtime_helpers import hf_greedy, random_prompts  # noqa: E402
from tiny_models import make_drafter, make_target  # noqa: E402

NEW = 32
LIMITS = Limits(max_batch=4, max_input_len=64, max_output_len=64)
TREES = {
    "default": TreeConfig(),
    "chain": TreeConfig(top_k=1, depth=2, total_tokens=3),
    "static": TreeConfig(top_k=3, depth=2, choices=((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0))),
}
# One export serves every tree: capacities for the largest, top-k of the widest.
T_KV = LIMITS.max_seq_len + max(t.tree_size for t in TREES.values())
D_KV = LIMITS.max_seq_len + max(t.max_accept + t.drafter_slots for t in TREES.values())
TOP_K = max(t.top_k for t in TREES.values())


@pytest.fixture(scope="module", params=["llama", "qwen2", "mixtral"])  # mixtral: MoE experts exported
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"ort-{request.param}")
    t = make_target(root / "t", family=request.param)
    d = make_drafter(root / "d", target=t)
    pair = load_pair(t, d, top_k=TOP_K)
    tokens = max(LIMITS.max_input_len, max(x.tree_size for x in TREES.values()))
    gt = export_target(pair.target, T_KV, root / "target.onnx", tokens, flavour="inplace")
    gd = export_drafter(pair.draft_step, D_KV, root / "drafter.onnx", tokens, flavour="inplace")
    ex = OrtExecutor(gt.path, gd.path, vocab_size=pair.target.vocab_size, hidden_size=pair.target.hidden_size,
                     top_k=TOP_K, target_kv_len=T_KV, drafter_kv_len=D_KV, max_batch=LIMITS.max_batch, device="cpu")
    assert ex.verify_writes
    return ex, pair.target.hf


@pytest.mark.parametrize("batch", [1, 4])
def test_inplace_graphs_greedy_equal_transformers(setup, batch):
    ex, hf = setup
    dec = SpeculativeDecoder(ex, TREES["default"], LIMITS)
    prompts = random_prompts(8, 96, seed=20 + batch)
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        for p, r in zip(chunk, dec.generate(chunk, NEW)):
            assert r.token_ids == hf_greedy(hf, p, NEW)
            assert r.target_forwards == len(r.accepted_per_step) > 0


@pytest.mark.parametrize("tree", ["chain", "static"])
def test_other_trees_and_plain_decoding_stay_exact(setup, tree):
    ex, hf = setup
    dec = SpeculativeDecoder(ex, TREES[tree], LIMITS)
    prompts = random_prompts(4, 96, seed=7)
    spec = dec.generate(prompts, NEW)
    plain = dec.generate(prompts, NEW, speculative=False)
    for p, a, b in zip(prompts, spec, plain):
        assert a.token_ids == b.token_ids == hf_greedy(hf, p, NEW)


def test_graphs_share_one_thread_pool(setup):
    """Both graphs run on the process's one onnxruntime pool (a pool per session made the verify
    after the drafter passes twice as slow: benchmarks/RESULTS.md); other values are refused."""
    ex, _ = setup
    for graph in (ex.target, ex.drafter):
        assert not graph.session.get_session_options().use_per_session_threads
    spec = ex.spec
    for pool, message in (("many", "not one of"), ("per-session", "needs a process of its own")):
        with pytest.raises(ValueError, match=message):
            OrtExecutor(ex.target.path, ex.drafter.path, vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
                        top_k=spec.top_k, target_kv_len=spec.target_kv_len, drafter_kv_len=spec.drafter_kv_len,
                        max_batch=spec.max_batch, device="cpu", thread_pool=pool)
