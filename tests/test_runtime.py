"""The decoding loop: lossless at temperature 0 (token-exact vs transformers), exact in distribution
at temperature > 0, batch rows independent, stats consistent."""
import pytest
import torch

from griffin_trt.recipe import Limits, TreeConfig
from griffin_trt.runtime import SamplingParams
from runtime_helpers import hf_greedy, make_decoder, random_prompts
from tiny_models import make_drafter, make_target

N_PROMPTS = 20
NEW = 32


@pytest.fixture(scope="module", params=["llama", "qwen2", "mixtral"])
def pair(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    t = make_target(d / "t", family=request.param)
    return t, make_drafter(d / "d", target=t)


@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_equals_transformers_generate(pair, batch):
    dec = make_decoder(*pair)
    hf = dec.ex.pair.target.hf
    prompts = random_prompts(N_PROMPTS, 96, seed=batch)
    for i in range(0, N_PROMPTS, batch):
        chunk = prompts[i : i + batch]
        results = dec.generate(chunk, NEW)
        for p, r in zip(chunk, results):
            assert r.token_ids == hf_greedy(hf, p, NEW)
            assert r.finish_reason == "length"
            # stats are consistent with the tokens produced
            assert 1 + sum(r.accepted_per_step) >= len(r.token_ids)
            assert r.target_forwards == len(r.accepted_per_step) > 0
            assert r.accepted_draft_tokens == sum(a - 1 for a in r.accepted_per_step)
            assert 1.0 <= r.acceptance_length <= TreeConfig().max_accept


def test_plain_decoding_through_same_caches_is_exact(pair):
    dec = make_decoder(*pair)
    hf = dec.ex.pair.target.hf
    prompts = random_prompts(4, 96, seed=7)
    for p, r in zip(prompts, dec.generate(prompts, NEW, speculative=False)):
        assert r.token_ids == hf_greedy(hf, p, NEW)
        assert r.acceptance_length == 1.0 and r.target_forwards == NEW - 1


@pytest.mark.parametrize(
    "tree",
    [
        TreeConfig(top_k=4, depth=3, total_tokens=16),
        TreeConfig(top_k=1, depth=2, total_tokens=3),  # a chain
        TreeConfig(top_k=3, depth=2, choices=((0,), (1,), (2,), (0, 0), (0, 1), (1, 0), (0, 0, 0))),
    ],
    ids=["small-dynamic", "chain", "static"],
)
def test_other_tree_shapes_stay_exact(pair, tree):
    dec = make_decoder(*pair, tree=tree)
    hf = dec.ex.pair.target.hf
    prompts = random_prompts(8, 96, seed=3)
    for i in range(0, 8, 4):
        for p, r in zip(prompts[i : i + 4], dec.generate(prompts[i : i + 4], NEW)):
            assert r.token_ids == hf_greedy(hf, p, NEW)
            assert max(r.accepted_per_step) <= tree.max_accept


def test_oracle_drafter_accepts_long_paths(pair):
    """A drafter that knows the target's continuation must reach the longest paths; this exercises
    the accept / KV-compaction / drafter-update bookkeeping with long accepted paths, which random
    drafters rarely produce."""
    dec = make_decoder(*pair)
    hf = dec.ex.pair.target.hf
    prompts = random_prompts(4, 96, seed=5)
    full = [p + hf_greedy(hf, p, NEW + 8) for p in prompts]
    real = dec.ex.draft_step

    def oracle(features, tokens, positions, write_index, mask):
        vals, ids, reg = real(features, tokens, positions, write_index, mask)
        vals, ids = vals.clone(), ids.clone()
        for b in range(ids.shape[0]):
            for j in range(ids.shape[1]):
                nxt = int(positions[b, j]) + 2  # entry t pairs (h_t, x_t+1) and predicts x_t+2
                if nxt < len(full[b]):
                    row = ids[b, j].tolist()
                    m = row.index(full[b][nxt]) if full[b][nxt] in row else 0
                    ids[b, j, m], ids[b, j, 0] = ids[b, j, 0].clone(), full[b][nxt]
                    vals[b, j, 0] = 0.0
        return vals, ids, reg

    dec.ex.draft_step = oracle
    results = dec.generate(prompts, NEW)
    for p, r in zip(prompts, results):
        assert r.token_ids == full[prompts.index(p)][len(p) : len(p) + NEW]
        assert r.acceptance_length > 4.0, r.accepted_per_step


def test_eos_stops_like_transformers(tmp_path):
    t = make_target(tmp_path / "t", vocab=24, seed=4)
    d = make_drafter(tmp_path / "d", target=t, vocab=24)
    prompts = random_prompts(8, 24, seed=11)
    hf = make_decoder(t, d).ex.pair.target.hf
    # The token the target emits most often is a stop token that will surely be hit.
    free = [tok for p in prompts for tok in hf_greedy(hf, p, 24)]
    eos = max(set(free), key=free.count)
    dec = make_decoder(t, d, eos=[eos])
    stopped = 0
    for i in range(0, 8, 4):
        for p, r in zip(prompts[i : i + 4], dec.generate(prompts[i : i + 4], 24)):
            ref = hf_greedy(hf, p, 24, eos=eos)
            assert r.token_ids == ref
            if ref[-1] == eos:
                stopped += 1
                assert r.finish_reason == "stop"
    assert stopped > 0


def test_streaming_callback_sees_every_token_in_order(pair):
    dec = make_decoder(*pair)
    seen = {0: [], 1: []}
    results = dec.generate(random_prompts(2, 96, seed=2), NEW, on_tokens=lambda row, ids: seen[row].extend(ids))
    assert [seen[0], seen[1]] == [r.token_ids for r in results]


def test_bad_requests_are_refused(pair):
    dec = make_decoder(*pair)
    for prompts, n, msg in [
        ([[]], 4, "prompt 0: the prompt is empty"),
        ([[1] * 65], 4, "longer than max_input_len = 64"),
        ([[1]], 0, r"max_tokens must be in \[1, 64\], got 0"),
        ([[1]], 65, "max_tokens must be in .*got 65"),
        ([[1], [96]], 4, r"prompt 1: input_ids must be token ids in \[0, 96\)"),
    ]:
        with pytest.raises(ValueError, match=msg):
            dec.generate(prompts, n)
    with pytest.raises(ValueError, match="temperature"):
        dec.generate([[1]], 4, SamplingParams(temperature=-1))
    with pytest.raises(ValueError, match=r"stop/end id\(s\) \[96\]"):
        dec.generate([[1]], 4, stop_ids=[96])
    with pytest.raises(ValueError, match="need a tokenizer"):
        dec.generate([[1]], 4, stop_strings=["x"])
    assert not dec.scheduler.has_work()  # nothing refused was queued


def _cuda_decoder(pair, cuda_graphs=True):
    from griffin_trt.runtime import SpeculativeDecoder
    from griffin_trt.runtime.executors.torch_executor import TorchExecutor

    tree, lim = TreeConfig(), Limits(max_batch=4, max_input_len=64, max_output_len=64)
    ex = TorchExecutor.from_paths(*pair, top_k=tree.top_k, target_kv_len=lim.max_seq_len + tree.tree_size,
                                  drafter_kv_len=lim.max_seq_len + tree.max_accept + tree.drafter_slots, max_batch=4,
                                  device="cuda", cuda_graphs=cuda_graphs)
    return SpeculativeDecoder(ex, tree, lim)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: the kernel-driven loop runs on GPU hosts")
@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_loop_with_triton_tree_kernels_is_exact(pair, batch):
    """CUDA: CUDA-graphed steps + the Triton tree kernels, token-exact vs transformers' greedy on the
    same GPU."""
    gpu = _cuda_decoder(pair)
    assert gpu.ex.tree_ops().name == "triton"
    assert gpu.scheduler.runner.expand.__name__ == "expand_frontier_triton"
    hf = gpu.ex.pair.target.hf
    prompts = random_prompts(8, 96, seed=9)
    for i in range(0, 8, batch):
        chunk = prompts[i : i + batch]
        got = [r.token_ids for r in gpu.generate(chunk, NEW)]
        assert got == [hf_greedy(hf, p, NEW) for p in chunk]
    assert gpu.ex._target.graphs and gpu.ex._draft.graphs, "no step was captured"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: CUDA graphs need one")
@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_graphs_replay_gives_the_eager_tokens(pair, batch):
    graphed, eager = _cuda_decoder(pair, cuda_graphs=True), _cuda_decoder(pair, cuda_graphs=False)
    prompts = random_prompts(8, 96, seed=13)
    for i in range(0, 8, batch):
        a = eager.generate(prompts[i : i + batch], NEW)
        b = graphed.generate(prompts[i : i + batch], NEW)
        assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert graphed.ex._target.graphs, "no step was captured"
