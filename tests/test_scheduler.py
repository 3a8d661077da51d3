"""In-flight batching: requests join and leave a running batch, every row stays exact.

The scheduler is driven step by step; requests arrive at chosen steps, with their own lengths,
settings and stop conditions, so rows are admitted mid-flight, retired at different steps (the
last row moves into the freed slot), and the tree budget changes with the number of active rows.
"""
import dataclasses

import pytest
import torch

from griffin_trt.recipe import Limits, TreeBudget, TreeConfig, TreeSchedule
from griffin_trt.runtime import Request, SamplingParams
from griffin_trt.runtime.executors.base import Executor
from runtime_helpers import hf_greedy, make_decoder, make_executor, random_prompts
from tiny_models import make_drafter, make_target

LIMITS = Limits(max_batch=4, max_input_len=64, max_output_len=48)
TREE = TreeConfig(top_k=4, depth=3, total_tokens=16)
# full tree alone, a smaller one from 2 rows, plain decoding from 4
SCHEDULE = TreeSchedule((TreeBudget(2, 6, 2), TreeBudget(4, 1)))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("sched")
    t = make_target(d / "t")
    return t, make_drafter(d / "d", target=t)


@pytest.fixture(scope="module")
def greedy(pair):
    hf = make_decoder(*pair, tree=TREE, limits=LIMITS).ex.pair.target.hf
    cache = {}

    def ref(prompt, n):
        key = (tuple(prompt), n)
        if key not in cache:
            with torch.no_grad():
                cache[key] = hf_greedy(hf, list(prompt), n)
        return cache[key]

    return ref


def drive(sched, arrivals):
    """Step until idle; `arrivals[step]` lists requests submitted just before that step."""
    infos, step = [], 0
    arrivals = dict(arrivals)
    while arrivals or sched.has_work():
        for req in arrivals.pop(step, []):
            sched.submit(req)
        info = sched.step()
        if info is not None:
            infos.append(info)
        step += 1
        assert step < 2000, "scheduler did not finish"
    return infos


def test_rows_admitted_mid_flight_stay_token_exact(pair, greedy):
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS, schedule=SCHEDULE)
    moves = []
    real_move = dec.ex.move_rows
    dec.ex.move_rows = lambda s, d: (moves.append((s, d)), real_move(s, d))
    prompts = random_prompts(10, 96, seed=21)
    lengths = [5, 40, 17, 48, 3, 29, 11, 48, 1, 22]
    reqs = [Request(p, n) for p, n in zip(prompts, lengths)]
    arrivals = {0: reqs[:2], 2: reqs[2:3], 3: reqs[3:6], 9: reqs[6:8], 15: reqs[8:]}
    infos = drive(dec.scheduler, arrivals)
    for req, n in zip(reqs, lengths):
        assert req.finished and req.result.finish_reason == "length"
        assert req.result.token_ids == greedy(req.prompt, n)
    assert any(i.admitted and i.active > i.admitted for i in infos), "no request joined a running batch"
    assert moves, "no retired slot was refilled by the last row"
    assert {i.tree_tokens for i in infos} == {16, 6, 1}  # every budget of the schedule ran
    for i in infos:
        assert i.tree_tokens == SCHEDULE.tree_for(TREE, i.active).tree_size
        assert i.rows in (1, 2, 4) and i.rows >= i.active  # bucketed row ranges
    lone = reqs[0].result  # alone for its first steps, then in company
    assert lone.tree_tokens_per_step[0] == 6 and len(lone.tree_tokens_per_step) == lone.target_forwards


def test_plain_budget_steps_run_no_drafter_and_catch_up_exactly(pair, greedy):
    """Under a plain budget a speculative row costs what a plain one does (no drafter call, bar one
    catch-up per `pending_capacity` steps); when drafting resumes, one drafter call writes what it
    missed, and the drafter's state equals what a fresh prefill of the whole sequence gives."""
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS, schedule=TreeSchedule((TreeBudget(2, 1),)))
    sched, runner, state = dec.scheduler, dec.scheduler.runner, dec.scheduler.state
    cap = state.pending_capacity
    calls = []  # (tree tokens of the decode step, drafter call width)
    in_step = []
    real_draft, real_decode, real_catch_up = dec.ex.draft_step, runner.decode, runner._catch_up

    def draft_step(features, tokens, *rest):
        if in_step:
            calls.append((in_step[-1], tokens.shape[1]))
        return real_draft(features, tokens, *rest)

    def decode(B, tree, *rest, **kw):
        in_step.append(tree.tree_size)
        try:
            return real_decode(B, tree, *rest, **kw)
        finally:
            in_step.pop()

    caught = []  # after each catch-up: row 0's sequence so far and its drafter root

    def catch_up(B):
        real_catch_up(B)
        # cached tokens, then the root (a catch-up that ends a step runs before its tokens are emitted)
        seq = (long.prompt + long.result.token_ids)[: int(state.ctx[0])] + [int(state.root[0])]
        caught.append((seq, state.root_ids[0].clone(), state.root_logp[0].clone(), state.root_feat[0].clone()))

    dec.ex.draft_step, runner.decode, runner._catch_up = draft_step, decode, catch_up
    long, short = (Request(p, n) for p, n in zip(random_prompts(2, 96, seed=23), (48, cap + 9)))
    infos = drive(sched, {0: [long], 3: [short]})

    assert long.result.token_ids == greedy(long.prompt, 48) and short.result.token_ids == greedy(short.prompt, cap + 9)
    plain_steps = [i for i in infos if i.tree_tokens == 1]
    assert len(plain_steps) > cap, "the plain period should outlast the pending capacity once"
    during_plain = [w for t, w in calls if t == 1]
    assert len(during_plain) == len(plain_steps) // cap and all(w == cap for w in during_plain)
    assert len(caught) == len(during_plain) + 1  # and once more when drafting resumed
    assert long.result.tree_tokens_per_step[-1] > 1, "the long row never drafted again"

    fresh = make_decoder(*pair, tree=TREE, limits=LIMITS)
    for seq, ids, logp, feat in caught:
        fresh.ex.select_rows(0, 1)
        first, pre = fresh.scheduler.runner.prefill(0, [seq[:-1]], lambda logits, depths: logits)
        assert first == [seq[-1]]
        fresh.scheduler.runner.prefill_drafter(pre)
        s = fresh.scheduler.state
        assert torch.equal(s.root_ids[0], ids)
        torch.testing.assert_close(s.root_logp[0], logp, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s.root_feat[0], feat, rtol=1e-4, atol=1e-4)


def test_mixed_speculative_and_plain_rows_share_steps(pair, greedy):
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS)
    prompts = random_prompts(6, 96, seed=22)
    reqs = [Request(p, 32, speculative=(i % 2 == 0)) for i, p in enumerate(prompts)]
    infos = drive(dec.scheduler, {0: reqs[:4], 4: reqs[4:]})
    assert any(i.tree_tokens > 1 for i in infos)
    for req in reqs:
        r = req.result
        assert r.token_ids == greedy(req.prompt, 32)
        if req.speculative:
            assert r.draft_tokens > 0 and r.acceptance_length > 1.0
        else:
            assert r.draft_tokens == 0 and r.accepted_draft_tokens == 0
            assert r.accepted_per_step == [1] * r.target_forwards and set(r.tree_tokens_per_step) == {1}


def test_seeded_request_gives_the_same_tokens_alone_and_in_a_crowd(pair):
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS, schedule=SCHEDULE)
    prompt = random_prompts(1, 96, seed=23)[0]
    sp = SamplingParams(temperature=0.9, top_k=40, seed=1234)
    alone = dec.generate([prompt], 40, sp)[0]
    others = random_prompts(5, 96, seed=24)
    crowd = [Request(p, 30, SamplingParams(temperature=1.0) if i % 2 else SamplingParams(), speculative=i != 3)
             for i, p in enumerate(others)]
    mine = Request(prompt, 40, dataclasses.replace(sp))
    drive(dec.scheduler, {0: crowd[:3], 2: [mine], 5: crowd[3:]})
    assert mine.result.token_ids == alone.token_ids
    assert set(mine.result.tree_tokens_per_step) != set(alone.tree_tokens_per_step)  # other budgets ran
    other_seed = dec.generate([prompt], 40, dataclasses.replace(sp, seed=4321))[0]
    assert other_seed.token_ids != alone.token_ids


def test_stop_strings_end_the_row_where_the_text_first_contains_them(pair, greedy):
    letters = lambda ids: "".join(chr(97 + t % 26) for t in ids)  # noqa: E731  one letter per token
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS, detokenize=letters)
    prompts = random_prompts(3, 96, seed=25)
    refs = [greedy(p, 40) for p in prompts]
    stops = [letters(refs[0][12:15]), letters(refs[1][0:1]), "#never#"]
    results = [dec.generate([p], 40, stop_strings=[s, "#other#"])[0] for p, s in zip(prompts, stops)]
    for ref, s, r in zip(refs, stops, results):
        text = letters(ref)
        if s in text:
            end = text.index(s) + len(s)  # the token that completes the stop string is kept
            assert r.token_ids == ref[:end] and r.finish_reason == "stop"
        else:
            assert r.token_ids == ref and r.finish_reason == "length"
    assert results[1].token_ids == refs[1][:1]


def test_cancel_frees_the_slot_within_one_step(pair):
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS)
    sched = dec.scheduler
    finished = []
    reqs = [Request(p, 48, on_finish=finished.append) for p in random_prompts(6, 96, seed=26)]
    for r in reqs[:5]:
        sched.submit(r)
    sched.step()
    sched.step()
    assert sched.active == 4 and len(sched.waiting) == 1
    victim = reqs[1]
    n = len(victim.result.token_ids)
    sched.cancel(victim)
    sched.cancel(reqs[4])  # still waiting: dropped, never admitted
    sched.submit(reqs[5])
    sched.step()
    assert victim.finished and victim.result.finish_reason == "cancelled" and len(victim.result.token_ids) == n
    assert reqs[4].finished and reqs[4].result.finish_reason == "cancelled" and not reqs[4].result.token_ids
    assert finished[:2] == [victim, reqs[4]] or finished[:2] == [reqs[4], victim]
    assert sched.active == 4 and reqs[5].result.token_ids, "the freed slot was not refilled in the same step"
    while sched.has_work():
        sched.step()
    assert all(r.finished for r in reqs)


class _NoRowSelection(Executor):
    """An executor that only knows `reset` (as the onnxruntime/TensorRT ones did before in-flight batching)."""

    def __init__(self, ex):
        self.inner, self.spec = ex, ex.spec

    def reset(self, batch):
        self.inner.reset(batch)

    def target_step(self, *a, **kw):
        return self.inner.target_step(*a, **kw)

    def draft_step(self, *a):
        return self.inner.draft_step(*a)

    def move_target_kv(self, src, dst):
        self.inner.move_target_kv(src, dst)


def test_executor_without_row_selection_batches_statically(pair, greedy):
    ex = _NoRowSelection(make_executor(*pair, TREE, LIMITS))
    dec = make_decoder(*pair, tree=TREE, limits=LIMITS, executor=ex)
    assert not dec.scheduler.packed
    prompts = random_prompts(6, 96, seed=27)
    lengths = [10, 30, 5, 20, 25, 8]
    reqs = [Request(p, n) for p, n in zip(prompts, lengths)]
    infos = drive(dec.scheduler, {0: reqs[:3], 1: reqs[3:]})
    for req, n in zip(reqs, lengths):
        assert req.result.token_ids == greedy(req.prompt, n)
    admitted_at = [k for k, i in enumerate(infos) if i.admitted]
    assert len(admitted_at) == 2 and infos[admitted_at[1]].active == infos[admitted_at[1]].admitted


def test_torch_executor_selects_and_moves_rows(pair):
    ex = make_executor(*pair, TREE, LIMITS)
    for c in (ex._tk, ex._tv, ex._dk, ex._dv):
        c.copy_(torch.randn_like(c))
    before = [c.clone() for c in (ex._tk, ex._tv, ex._dk, ex._dv)]
    ex.select_rows(1, 3)
    assert ex.batch == 2 and ex.tk.shape[1] == 2 and ex.dk.shape[0] == 2
    assert torch.equal(ex.tk, before[0][:, 1:3]) and torch.equal(ex.dv, before[3][1:3])
    ex.move_rows(3, 0)
    assert torch.equal(ex._tk[:, 0], before[0][:, 3]) and torch.equal(ex._tv[:, 0], before[1][:, 3])
    assert torch.equal(ex._dk[0], before[2][3]) and torch.equal(ex._dv[0], before[3][3])
    assert torch.equal(ex._tk[:, 1:], before[0][:, 1:])  # nothing else changed
    with pytest.raises(ValueError, match="outside"):
        ex.select_rows(2, 5)
    with pytest.raises(ValueError, match="outside"):
        ex.select_rows(2, 2)
    with pytest.raises(ValueError, match="max_batch"):
        ex.move_rows(4, 0)
