"""`griffin-trt serve --openai-port`: the OpenAI-compatible endpoint, driven by the official `openai` SDK.

The deployment runs as users run it (the CLI, a real tritonserver, a tiny pair with a chat template); the
ground truth is transformers' own greedy decoding of the tiny target and the `ensemble` model's answer.
Skipped, with the reason, where tritonserver cannot run here.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from griffin_trt import request_rules as rules
from griffin_trt.client.client import GriffinClient
from griffin_trt.serving.server import free_ports
from serving_helpers import (greedy_reference, metric_total, settled_metrics, skip_unless_tritonserver_runs,
                             tiny_recipe_spec, write_recipe_toml)

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.server

MAX_IN, MAX_OUT = 256, 256
MODEL = "tiny"
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, repo_root):
    skip_unless_tritonserver_runs()
    root = tmp_path_factory.mktemp("openai")
    spec = tiny_recipe_spec(root, {"max_batch": 2, "max_input_len": MAX_IN, "max_output_len": MAX_OUT},
                            chat_template=TEMPLATE)
    write_recipe_toml(spec, root / "tiny.toml")
    grpc, http, metrics, port = free_ports(4)
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "griffin_trt.cli", "serve", "--recipe", str(root / "tiny.toml"),
         "--grpc-port", str(grpc), "--http-port", str(http), "--metrics-port", str(metrics), "--openai-port", str(port)],
        cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 240
        while "ready:" not in (root / "serve.log").read_text():
            assert proc.poll() is None, (root / "serve.log").read_text()
            assert time.monotonic() < deadline, "griffin-trt serve did not become ready"
            time.sleep(0.5)
        yield SimpleNamespace(
            base_url=f"http://127.0.0.1:{port}/v1", grpc_url=f"127.0.0.1:{grpc}",
            metrics_url=f"http://127.0.0.1:{metrics}/metrics", root=root, proc=proc,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()


@pytest.fixture(scope="module")
def reference(endpoint):
    return greedy_reference(endpoint.root)


@pytest.fixture(scope="module")
def client(endpoint):
    with openai.OpenAI(base_url=endpoint.base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def greedy_text(reference, text, n):
    tok = reference.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    return ids, tok.decode(reference(ids, n))


def stream_text(chunks, chat=False):
    parts = []
    for c in chunks:
        for ch in c.choices:
            parts.append((ch.delta.content or "") if chat else ch.text)
    return "".join(parts)


def test_models_health_and_an_unknown_model(endpoint, client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with urllib.request.urlopen(endpoint.base_url.removesuffix("/v1") + "/health", timeout=30) as r:
        assert r.status == 200
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert e.value.body["message"] == "The model `nope` does not exist." and e.value.code == "model_not_found"


def test_completion_greedy_equals_the_target_and_the_ensemble(endpoint, client, reference):
    prompt = "Hello, world"
    ids, want = greedy_text(reference, prompt, 20)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    assert r.choices[0].text == want and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(ids), 20, len(ids) + 20)
    stats = r.model_extra["griffin"]
    assert stats["speculative"] and stats["acceptance_length"] >= 1.0 and 0 < stats["target_forwards"] < 20
    assert 0 <= stats["total_accepted_draft_tokens"] <= stats["total_draft_tokens"]

    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert stream_text(chunks) == want and len(chunks) > 3
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].model_extra["griffin"]["target_forwards"] > 0
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20

    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0,
                                      extra_body={"speculative": False})
    assert plain.choices[0].text == want and plain.model_extra["griffin"]["total_draft_tokens"] == 0
    with GriffinClient(endpoint.grpc_url, timeout_s=120) as c:
        assert c.generate(prompt, max_tokens=20, stream=False).text == want


def test_chat_applies_the_target_chat_template(client, reference):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    ids, want = greedy_text(reference, "<system>Be brief.\n<user>Hi there\n<assistant>", 16)
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 16
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=16,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert stream_text(chunks, chat=True) == want and chunks[-1].choices[0].finish_reason == "length"


def test_stop_strings_and_seeded_sampling(endpoint, client, reference):
    prompt = "def parse(argv):"
    _, want = greedy_text(reference, prompt, 24)
    stop = want[6:8]
    cut = want[: want.index(stop)]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stop=[stop, "never"])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0, stop=stop,
                                            stream=True))
    assert stream_text(chunks) == cut and chunks[-1].choices[0].finish_reason == "stop"

    kw = dict(model=MODEL, prompt=prompt, max_tokens=24, temperature=0.9, top_p=0.9, seed=7)
    a = client.completions.create(**kw).choices[0].text
    b = stream_text(client.completions.create(**kw, stream=True, extra_body={"speculative": False}))
    with GriffinClient(endpoint.grpc_url, timeout_s=120) as c:
        e = c.generate(prompt, max_tokens=24, temperature=0.9, top_p=0.9, seed=7, stream=False).text
    assert a == b == e and a != want


def _refusal(call) -> dict:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    return e.value.body


def _rule_message(check, *args) -> str:
    with pytest.raises(rules.RequestError) as e:
        check(*args)
    return str(e.value)


def _raw(url, data=None) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(endpoint, client, reference):
    def completion(**kw):
        return lambda: client.completions.create(**{"model": MODEL, "prompt": "abc", "max_tokens": 4, **kw})

    same_as_rules = {
        "max_tokens": (completion(max_tokens=0), _rule_message(rules.check_max_tokens, 0, MAX_OUT)),
        "temperature": (completion(temperature=-1), _rule_message(rules.check_temperature, -1)),
        "top_p": (completion(top_p=1.5), _rule_message(rules.check_top_p, 1.5)),
        "seed": (completion(seed=-1), _rule_message(rules.check_seed, -1)),
        "prompt": (completion(prompt="x" * (MAX_IN + 1)), _rule_message(rules.check_prompt_ids, [1] * (MAX_IN + 1), MAX_IN, None)),
    }
    for param, (call, message) in same_as_rules.items():
        body = _refusal(call)
        assert (body["message"], body["param"], body["type"]) == (message, param, "invalid_request_error")
    assert "refused before tokenizing" in _refusal(completion(prompt="x" * 100_000))["message"]
    assert _refusal(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "y" * MAX_IN}], max_tokens=4))["message"].startswith(
        "the prompt is ")
    assert _refusal(completion(n=2))["message"] == "n = 2 is not supported (one choice per request); send 1 or leave it out"
    assert _refusal(completion(logprobs=1))["param"] == "logprobs"
    assert _refusal(lambda: client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True))["message"].startswith("logprobs = true")
    assert _refusal(completion(extra_body={"bogus": 1}))["message"] == "Unrecognized request argument supplied: bogus"
    assert _refusal(completion(max_tokens="many"))["param"] == "max_tokens"

    status, body = _raw(f"{endpoint.base_url}/completions", b"{not json")
    assert status == 400 and body["error"]["message"].startswith("the request body is not valid JSON")
    status, body = _raw(f"{endpoint.base_url}/nowhere")
    assert status == 404 and body["error"]["message"] == "Not Found"

    _, want = greedy_text(reference, "abc", 8)
    assert client.completions.create(model=MODEL, prompt="abc", max_tokens=8, temperature=0).choices[0].text == want


def test_clients_that_leave_free_their_rows(endpoint, client):
    """Both rows decode 256-token streams whose clients break off after a few chunks, then a unary
    request whose client times out: each stops decoding within a few steps, and the next request starts
    at once."""
    prompt, long = "import os", dict(model=MODEL, max_tokens=MAX_OUT, temperature=0)
    t0 = time.perf_counter()
    client.completions.create(prompt=prompt, **long)
    full_s = time.perf_counter() - t0  # how long a row left decoding would hold up the next request
    m0 = settled_metrics(endpoint)

    received = 0
    streams = [client.completions.create(prompt=p, stream=True, **long) for p in (prompt, "class A:")]
    for s in streams:
        for chunk in s:
            received += len(stream_text([chunk]))  # one character per token
            if received >= 8:
                break
    for s in streams:
        s.close()  # the SDK's way to break off: the HTTP connection closes
    m1 = settled_metrics(endpoint)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).completions.create(prompt="while True:", **long)
    m2 = settled_metrics(endpoint)
    t0 = time.perf_counter()
    first = next(iter(client.completions.create(model=MODEL, prompt="x = 1", max_tokens=4, temperature=0, stream=True)))
    ttft_s = time.perf_counter() - t0

    def delta(a, b, family, **labels):
        return metric_total(b, family, **labels) - metric_total(a, family, **labels)

    cancelled = {"outcome": "cancelled"}
    assert delta(m0, m1, "griffin_requests", **cancelled) == 2 and delta(m1, m2, "griffin_requests", **cancelled) == 1
    # tree depth 3: a step decodes up to 4 tokens a row; the bound leaves room for a busy machine
    assert received <= delta(m0, m1, "griffin_generated_tokens") <= received + 2 * 48
    assert delta(m1, m2, "griffin_generated_tokens") < MAX_OUT
    assert first.choices[0].text and ttft_s < full_s / 2, (ttft_s, full_s)
