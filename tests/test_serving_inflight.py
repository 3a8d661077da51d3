"""In-flight batching behind a real tritonserver: requests join a running batch and come from clients
written for TensorRT-LLM (its ensemble input names, Triton's HTTP generate endpoints).

One tiny deployment (torch back end, a character tokenizer) with max_batch 8 and a tree-budget
schedule, so budgets change with the load. Skipped, with the reason, where tritonserver cannot run.
"""
import json
import os
import threading
import time
import urllib.request

import numpy as np
import pytest

from griffin_trt.client.client import GriffinClient
from serving_helpers import (griffin_metrics, greedy_reference, metric_total, serve_tiny_deployment, settled_metrics,
                             stream_responses)

pytestmark = pytest.mark.server

MAX_IN, MAX_OUT = 256, 256
LOAD_S = float(os.environ.get("GRIFFIN_LOAD_S", 60))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from serve_tiny_deployment(
        tmp_path_factory.mktemp("inflight"), {"max_batch": 8, "max_input_len": MAX_IN, "max_output_len": MAX_OUT},
        {"budgets": [{"batch": 3, "total_tokens": 6, "depth": 2}, {"batch": 6, "total_tokens": 1}]},
    )


@pytest.fixture(scope="module")
def reference(deployment):
    """transformers' own greedy decoding of the tiny target (the lossless ground truth)."""
    return greedy_reference(deployment["root"])


def stop_at(text: str, ids: list[int], stops: list[str], tok) -> list[int]:
    """The greedy ids cut after the token that completes the first stop string in the text."""
    for i in range(1, len(ids) + 1):
        if any(s in tok.decode(ids[:i]) for s in stops):
            return ids[:i]
    return ids


# ------------------------------------------------------------------ HTTP generate endpoints


def _post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=120)


def test_http_generate_and_generate_stream_on_the_ensemble(deployment, reference):
    tok = reference.tokenizer
    base = f"{deployment['server'].http_url}/v2/models/ensemble"
    prompt = "The quick brown fox"
    ids = tok(prompt).input_ids
    want = tok.decode(reference(ids, 20))

    out = json.loads(_post(f"{base}/generate", {"text_input": prompt, "max_tokens": 20,
                                                "exclude_input_in_output": True}).read())
    assert out["text_output"] == want and out["num_output_tokens"] == 20
    # TensorRT-LLM's rule: without exclude_input_in_output a unary answer starts with the prompt
    out = json.loads(_post(f"{base}/generate", {"text_input": prompt, "max_tokens": 20}).read())
    assert out["text_output"] == prompt + want

    chunks = []
    with _post(f"{base}/generate_stream", {"text_input": prompt, "max_tokens": 20, "stream": True}) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data:"):
                chunks.append(json.loads(line[5:]))
    assert "".join(c["text_output"] for c in chunks) == want
    assert len(chunks) > 2 and chunks[-1]["num_output_tokens"] == 20

    stop = want[8:11]
    out = json.loads(_post(f"{base}/generate", {"text_input": prompt, "max_tokens": 20, "stop_words": [stop],
                                                "exclude_input_in_output": True}).read())
    assert out["text_output"] == want[: want.index(stop) + len(stop)]


# ------------------------------------------------------------------ TensorRT-LLM clients


def _ensemble_request(url, inputs):
    """One streamed request through the ensemble with raw tritonclient inputs: (text, error)."""
    text = []
    for result, error in stream_responses(url, "ensemble", inputs, until_final=True):
        if error is not None:
            return "".join(text), str(error)
        if any(o.name == "text_output" for o in result.get_response().outputs):
            text += [x.decode() for x in result.as_numpy("text_output").reshape(-1)]
    return "".join(text), None


def test_tensorrt_llm_inputs_are_used_ignored_or_refused(deployment, reference):
    tok = reference.tokenizer
    prompt = "def parse(argv):"
    want = tok.decode(reference(tok(prompt).input_ids, 24))
    stop = want[10:13]
    i32 = lambda v: ("INT32", np.array([[v]], np.int32))  # noqa: E731
    f32 = lambda v: ("FP32", np.array([[v]], np.float32))  # noqa: E731
    b = lambda v: ("BOOL", np.array([[v]], np.bool_))  # noqa: E731
    s = lambda *v: ("BYTES", np.array([[x.encode() for x in v]], np.object_))  # noqa: E731
    # everything a TensorRT-LLM client may send, at values that change nothing or that we implement
    full = {
        "text_input": s(prompt), "max_tokens": i32(24), "stream": b(True), "temperature": f32(0.0),
        "top_p": f32(1.0), "top_k": i32(0), "seed": ("UINT64", np.array([[3]], np.uint64)),
        "end_id": i32(95), "pad_id": i32(95), "stop_words": s(stop, ""), "bad_words": s(""),
        "exclude_input_in_output": b(True), "return_perf_metrics": b(True), "return_num_input_tokens": b(True),
        "return_num_output_tokens": b(True), "length_penalty": f32(1.0), "repetition_penalty": f32(1.0),
        "presence_penalty": f32(0.0), "frequency_penalty": f32(0.0), "min_tokens": i32(1), "beam_width": i32(1),
        "num_return_sequences": i32(1), "return_log_probs": b(False), "return_context_logits": b(False),
        "return_generation_logits": b(False),
    }
    url = deployment["server"].grpc_url
    text, err = _ensemble_request(url, [(k, a, dt) for k, (dt, a) in full.items()])
    assert err is None and text == want[: want.index(stop) + len(stop)]
    log = (deployment["root"] / "tritonserver.log").read_text()
    assert "pad_id is accepted and ignored" in log and "length_penalty is accepted and ignored" in log
    for name, value, msg in [
        ("beam_width", i32(2), "beam_width = 2 is not supported"),
        ("bad_words", s("foo"), "bad_words = 'foo' is not supported"),
        ("repetition_penalty", f32(1.3), "repetition_penalty"),
        ("return_log_probs", b(True), "return_log_probs"),
        ("lora_task_id", ("UINT64", np.array([[7]], np.uint64)), "lora_task_id"),
        ("top_p", f32(1.5), "top_p"),  # the runtime's sampling rules
    ]:
        inputs = dict(full, **{name: value})
        _, err = _ensemble_request(url, [(k, a, dt) for k, (dt, a) in inputs.items()])
        assert err is not None and msg in err, (name, err)
    _, err = _ensemble_request(url, [("text_input", *s(prompt)[::-1]), ("max_tokens", *i32(4)[::-1]),
                                     ("no_such_input", *i32(1)[::-1])])
    assert err is not None and "no_such_input" in err  # Triton itself refuses undeclared inputs
    assert deployment["server"].is_alive()


# ------------------------------------------------------------------ load


@pytest.mark.slow
def test_mixed_load_stays_exact_and_seeded_samples_reproduce(deployment, reference):
    """Concurrency 8 for LOAD_S seconds with mixed max_tokens, temperatures, speculation on/off and
    stop words: every greedy output equals the target's greedy output (cut at its stop word), every
    seeded T>0 output equals the same request sent alone, no stream fails or ends early."""
    url = deployment["server"].grpc_url
    tok = reference.tokenizer
    rng = np.random.default_rng(10)
    prompts = ["".join(chr(32 + int(c)) for c in rng.integers(0, 95, rng.integers(1, 60))) for _ in range(16)]
    lengths = [8, 24, 64, 200]
    sampled = []  # (prompt, max_tokens, temperature, top_p, seed) -> tokens when sent alone
    with GriffinClient(url, timeout_s=300) as c:
        for k in range(6):
            key = (prompts[k], lengths[k % 4], 0.8, 0.95, 100 + k)
            r = c.generate(key[0], max_tokens=key[1], temperature=key[2], top_p=key[3], seed=key[4])
            sampled.append((key, r.token_ids))
    errors, done, lock = [], {"greedy": 0, "sampled": 0, "stopped": 0, "plain": 0}, threading.Lock()
    stop_by = time.monotonic() + LOAD_S

    def worker(w):
        i = w
        with GriffinClient(url, timeout_s=300) as c:
            while time.monotonic() < stop_by:
                spec = (i % 3) != 1
                try:
                    if i % 4 == 3:  # a seeded sample, also sent alone before the load
                        key, want = sampled[i % len(sampled)]
                        r = c.generate(key[0], max_tokens=key[1], temperature=key[2], top_p=key[3], seed=key[4],
                                       speculative=spec, raise_on_error=False)
                        ok = r.ok and r.token_ids == want
                        kind = "sampled"
                    else:
                        p, n = prompts[i % len(prompts)], lengths[(i // 4) % 4]
                        ids = tok(p).input_ids
                        want = reference(ids, n)
                        stops = [tok.decode(want)[5:7]] if i % 5 == 0 else None
                        if stops:
                            want = stop_at(p, want, stops, tok)
                        r = c.generate(p, max_tokens=n, stream=(i % 2 == 0), speculative=spec, stop_words=stops,
                                       raise_on_error=False)
                        ok = r.ok and r.token_ids == want and r.text == tok.decode(want)
                        kind = "stopped" if stops else "greedy"
                    with lock:
                        done[kind] += ok
                        done["plain"] += ok and not spec
                    if not ok:
                        errors.append((i, r.error or "tokens differ"))
                except Exception as e:  # noqa: BLE001 - collected and reported below
                    errors.append((i, repr(e)))
                i += 8

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=LOAD_S + 600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert done["greedy"] >= 16 and done["sampled"] >= 4 and done["stopped"] >= 2 and done["plain"] >= 4, done
    m = griffin_metrics(deployment["server"])
    assert metric_total(m, "griffin_decode_steps", tree_tokens="1") > 0  # plain budget under load
    assert metric_total(m, "griffin_decode_steps", tree_tokens="12") > 0  # the full tree when alone
    assert deployment["server"].is_alive()


def test_prometheus_counters_equal_the_per_request_statistics_of_a_bench_run(deployment):
    from griffin_trt.client.bench import load_prompts, run_bench

    url = deployment["server"].grpc_url
    before = settled_metrics(deployment["server"])
    report = run_bench(url, load_prompts(num=8), [1, 3], max_tokens=16, stream=True, show_progress=False,
                       warmup=False)
    after = settled_metrics(deployment["server"])
    rows = [r for run in report["runs"] for mode in run["modes"].values() for r in mode["requests"]]
    spec = [r for r in rows if r["mode"] == "speculative"]
    assert rows and all(r["ok"] for r in rows)

    def delta(family, **labels):
        return metric_total(after, family, **labels) - metric_total(before, family, **labels)

    assert delta("griffin_generated_tokens") == sum(r["num_tokens"] for r in rows)
    assert delta("griffin_requests", outcome="ok") == len(rows)
    assert delta("griffin_spec_decode_num_drafts") == sum(r["target_forwards"] for r in spec)
    assert delta("griffin_spec_decode_num_draft_tokens") == sum(r["total_draft_tokens"] for r in spec)
    assert delta("griffin_spec_decode_num_accepted_tokens") == sum(r["total_accepted_draft_tokens"] for r in spec)
    assert delta("griffin_spec_decode_num_accepted_tokens_per_pos") == delta("griffin_spec_decode_num_accepted_tokens")
