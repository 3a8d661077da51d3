"""Temperature > 0: speculative sampling must follow the target's distribution exactly.

The second emitted token is the first one produced by tree verification (the first comes from
prefill). Its exact marginal, sum over x1 of p(x1) p(x2 | x1), is computed from the target and
compared with 1600 samples (400 batches of 4 rows, every row with its own seed) by a chi-square
test; a deliberately biased acceptance rule must fail the same test.
"""
import dataclasses

import pytest
import torch

from griffin_trt.recipe import Limits, TreeConfig
from griffin_trt.runtime import SamplingParams
from griffin_trt.tree import process_logits
from runtime_helpers import make_decoder
from tiny_models import make_drafter, make_target

VOCAB = 8
PROMPT = [1, 5, 2]
RUNS, BATCH = 400, 4
CHI2_CRIT_DF7 = 24.32  # alpha = 0.001


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tinyvocab")
    t = make_target(d / "t", vocab=VOCAB, seed=2)
    dr = make_drafter(d / "d", target=t, vocab=VOCAB)
    tree = TreeConfig(top_k=4, depth=2, total_tokens=12)
    return make_decoder(t, dr, tree=tree, limits=Limits(max_batch=BATCH, max_input_len=8, max_output_len=4))


def exact_second_token(decoder, sp: SamplingParams) -> torch.Tensor:
    hf = decoder.ex.pair.target.hf
    with torch.no_grad():
        p1 = process_logits(hf(torch.tensor([PROMPT])).logits[0, -1], sp.temperature, sp.top_p, sp.top_k)
        seqs = torch.tensor([PROMPT + [x] for x in range(VOCAB)])
        p2 = process_logits(hf(seqs).logits[:, -1], sp.temperature, sp.top_p, sp.top_k)
    return (p1[:, None] * p2).sum(0)


def chi2(decoder, sp: SamplingParams) -> float:
    counts = torch.zeros(VOCAB)
    for i in range(RUNS):
        seeds = [dataclasses.replace(sp, seed=1000 + BATCH * i + b) for b in range(BATCH)]
        for r in decoder.generate([PROMPT] * BATCH, 2, seeds):
            counts[r.token_ids[1]] += 1
    expected = exact_second_token(decoder, sp) * counts.sum()
    keep = expected > 5  # chi-square needs enough expected mass per cell; pool the rest
    obs = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
    exp = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)])
    return float(((obs - exp) ** 2 / exp.clamp(min=1e-9)).sum())


@pytest.mark.parametrize("sp", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_p=0.9)],
                         ids=["t1", "t0.7-p0.9"])
def test_speculative_sampling_matches_target_distribution(decoder, sp):
    stat = chi2(decoder, sp)
    assert stat < CHI2_CRIT_DF7, f"chi-square {stat:.1f}: emitted tokens do not follow the target"


def test_biased_acceptance_is_detected(decoder, monkeypatch):
    # Accepting a drafted child when it is the target's first OR second choice (on the perturbed
    # scores) instead of its sample favours drafts.
    runner = decoder.scheduler.runner
    real = runner.greedy_accept

    def biased(tree, scores):
        top2 = scores.topk(2, dim=-1).indices
        at_parent = top2.gather(1, tree.parents.clamp(min=0)[..., None].expand(-1, -1, 2))
        ok = (at_parent == tree.tokens[..., None]).any(-1) | (tree.parents < 0)
        accepted = ~(tree.mask & ~ok[:, None, :]).any(-1)
        # reuse the real rule on scores that make every accepted node its parent's argmax
        boosted = scores.clone()
        for b, j in (accepted & (tree.parents >= 0)).nonzero().tolist():
            boosted[b, tree.parents[b, j], tree.tokens[b, j]] = float("inf")
        return real(tree, boosted)

    monkeypatch.setattr(runner, "greedy_accept", biased)
    stat = chi2(decoder, SamplingParams(temperature=1.0))
    assert stat > CHI2_CRIT_DF7, f"biased acceptance went unnoticed (chi-square {stat:.1f})"


def test_same_seed_same_output(decoder):
    a = decoder.generate([PROMPT], 4, SamplingParams(temperature=1.0, seed=7))[0].token_ids
    b = decoder.generate([PROMPT], 4, SamplingParams(temperature=1.0, seed=7))[0].token_ids
    assert a == b


def test_seeded_rows_match_alone_in_a_batch_and_without_speculation(decoder):
    """The row's own generator draws one noise vector per output position: the batch, the tree and
    speculation on or off do not change a seeded request's tokens."""
    sp = SamplingParams(temperature=0.8, top_p=0.95, seed=11)
    alone = decoder.generate([PROMPT], 4, sp)[0].token_ids
    crowd = decoder.generate([[3, 1], PROMPT, [7, 7, 7], PROMPT],
                             4, [SamplingParams(temperature=1.0, seed=5), sp, SamplingParams(), sp])
    plain = decoder.generate([PROMPT], 4, sp, speculative=False)[0].token_ids
    assert crowd[1].token_ids == alone == crowd[3].token_ids == plain
