"""A real tritonserver (the pytriton binary on CPU) serving a tiny GRIFFIN pair over gRPC.

Starts the server itself on free loopback ports, waits until ready and stops it by pid. Skipped, with
the reason, where the binary cannot run here.
"""
import threading
import time

import numpy as np
import pytest

from griffin_trt.client.client import GriffinClient
from serving_helpers import VOCAB, greedy_reference, griffin_metrics, serve_tiny_deployment, stream_responses

pytestmark = pytest.mark.server

MAX_IN, MAX_OUT = 256, 32


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from serve_tiny_deployment(
        tmp_path_factory.mktemp("serving"), {"max_batch": 4, "max_input_len": MAX_IN, "max_output_len": MAX_OUT}
    )


@pytest.fixture(scope="module")
def reference(deployment):
    """transformers' own greedy decoding of the tiny target (the lossless ground truth)."""
    return greedy_reference(deployment["root"])


PROMPTS = [[40, 69, 76, 76, 79], [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43], [7]]


def test_stream_and_unary_greedy_equal_target(deployment, reference):
    with GriffinClient(deployment["server"].grpc_url, model="griffin", timeout_s=120) as c:
        for ids in PROMPTS:
            want = reference(ids, 20)
            s = c.generate(input_ids=ids, max_tokens=20, stream=True, speculative=True)
            u = c.generate(input_ids=ids, max_tokens=20, stream=False, speculative=True)
            p = c.generate(input_ids=ids, max_tokens=20, stream=True, speculative=False)
            assert s.token_ids == want  # also catches the numpy-2 trap (empty outputs)
            assert u.token_ids == want
            assert p.token_ids == want
            assert u.num_responses == 1 and s.num_responses > 1
            for r in (s, u):
                assert r.acceptance_length >= 1.0 and r.target_forwards > 0
                assert r.num_decode_steps == r.target_forwards
                assert 0 <= r.total_accepted_draft_tokens <= r.total_draft_tokens
                assert r.arrival_time_ns <= r.first_token_time_ns <= r.last_token_time_ns
                # every decode step emits >= 1 token; the first token comes from prefill
                assert r.target_forwards <= len(want) - 1
            assert p.total_draft_tokens == 0 and p.target_forwards > 0


def test_ensemble_text_streams_the_same_text(deployment, reference):
    tok = reference.tokenizer
    prompt = "Hello, world"
    want = tok.decode(reference(tok(prompt).input_ids, 16))
    with GriffinClient(deployment["server"].grpc_url, timeout_s=120) as c:
        chunks = []
        s = c.generate(prompt, max_tokens=16, stream=True, on_text=chunks.append)
        u = c.generate(prompt, max_tokens=16, stream=False)
    assert s.text == want and u.text == want
    assert len(chunks) > 1 and "".join(chunks) == want
    assert s.num_tokens == 16 and s.acceptance_length >= 1.0


def test_metrics_endpoint_shows_spec_decode_counters(deployment):
    with GriffinClient(deployment["server"].grpc_url, model="griffin", timeout_s=120) as c:
        c.generate(input_ids=PROMPTS[0], max_tokens=8)
    time.sleep(0.5)
    values = griffin_metrics(deployment["server"])

    def total(prefix):
        return sum(v for k, v in values.items() if k.startswith(prefix + "{"))

    assert total("griffin_spec_decode_num_drafts") > 0
    assert total("griffin_spec_decode_num_draft_tokens") > 0
    assert total("griffin_spec_decode_num_accepted_tokens") >= 0
    assert "griffin_spec_decode_num_accepted_tokens" in values.__repr__()
    assert any(k.startswith("griffin_spec_decode_num_accepted_tokens_per_pos{") and 'position="' in k for k in values) \
        or total("griffin_spec_decode_num_accepted_tokens") == 0
    assert total("griffin_spec_decode_draft_time_seconds_count") > 0
    assert total("griffin_spec_decode_verify_time_seconds_count") > 0


def _first_error(url, model, spec, params=None):
    return stream_responses(url, model, spec, params, timeout=60)[0][1]


def test_bad_requests_are_refused_and_server_keeps_serving(deployment, reference):
    url = deployment["server"].grpc_url
    i32 = lambda v: np.array(v, np.int32)  # noqa: E731
    ok_len = ("request_output_len", i32([[4]]), "INT32")
    cases = {
        "empty": [("input_ids", np.zeros((1, 0), np.int32), "INT32"), ok_len],
        "max_input_len": [("input_ids", i32([[1] * (MAX_IN + 1)]), "INT32"), ok_len],
        "must be in [1, 32]": [("input_ids", i32([[1, 2]]), "INT32"), ("request_output_len", i32([[0]]), "INT32")],
        "must be in [1, 32] ": [("input_ids", i32([[1, 2]]), "INT32"), ("request_output_len", i32([[MAX_OUT + 1]]), "INT32")],
        "data-type": [("input_ids", np.array([[1, 2]], np.int64), "INT64"), ok_len],
        "token ids": [("input_ids", i32([[1, VOCAB + 5]]), "INT32"), ok_len],
        "top_p": [("input_ids", i32([[1, 2]]), "INT32"), ok_len, ("runtime_top_p", np.array([[1.5]], np.float32), "FP32")],
    }
    for expect, inputs in cases.items():
        err = _first_error(url, "griffin", inputs)
        assert err is not None, expect
        assert expect.strip().lower() in str(err).lower(), (expect, str(err))
    err = _first_error(url, "griffin", [("input_ids", i32([[1, 2]]), "INT32"), ok_len], params={"bogus": 1})
    assert err is not None and "unknown request parameter" in str(err)
    err = _first_error(url, "ensemble", [("text_input", np.array([[b"  "]], object), "BYTES"),
                                        ("max_tokens", i32([[4]]), "INT32")])
    assert err is not None and "empty" in str(err)
    assert deployment["server"].is_alive()
    with GriffinClient(url, model="griffin", timeout_s=120) as c:
        assert c.generate(input_ids=PROMPTS[1], max_tokens=12).token_ids == reference(PROMPTS[1], 12)


@pytest.mark.slow
def test_concurrent_streams_under_load(deployment, reference):
    """16 concurrent streams for about 30 s: no failures, every output equal to unloaded greedy."""
    url = deployment["server"].grpc_url
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(0, VOCAB, rng.integers(1, 40))] for _ in range(12)]
    want = {tuple(p): reference(p, 24) for p in prompts}
    errors, done = [], []
    stop_at = time.monotonic() + 30

    def worker(k):
        with GriffinClient(url, model="griffin", timeout_s=180) as c:
            i = k
            while time.monotonic() < stop_at:
                p = prompts[i % len(prompts)]
                r = c.generate(input_ids=p, max_tokens=24, stream=True, speculative=(i % 3 != 0), raise_on_error=False)
                if not r.ok:
                    errors.append(r.error)
                elif r.token_ids != want[tuple(p)]:
                    errors.append(f"mismatch for prompt {i % len(prompts)}")
                else:
                    done.append(r.num_tokens)
                i += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert len(done) >= 16
    assert deployment["server"].is_alive()
