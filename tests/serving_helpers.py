"""A tiny GRIFFIN deployment behind a real tritonserver (the pytriton binary on CPU), for the serving
tests: a character tokenizer, a torch-backend repository, the server on free loopback ports, and
transformers' greedy decoding of the tiny target as the lossless ground truth."""
import threading

import pytest

VOCAB = 96


def make_char_tokenizer(folder, chat_template: str | None = None):
    """A character tokenizer over printable ASCII (ids 0..94) + <unk> (95): offline, exact round trips."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): c - 32 for c in range(32, 127)}
    vocab["<unk>"] = 95
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(folder)


def skip_unless_tritonserver_runs():
    from griffin_trt.serving.server import ServerError, check_runnable, find_tritonserver

    try:
        check_runnable(find_tritonserver())
    except ServerError as e:
        pytest.skip(f"tritonserver cannot run here: {e}")


def tiny_recipe_spec(root, limits: dict, schedule: dict | None = None, chat_template: str | None = None) -> dict:
    """A tiny pair (torch back end, character tokenizer) in `root`; returns the recipe as a dict."""
    from tiny_models import make_drafter, make_target

    target = make_target(root / "target", vocab=VOCAB)
    make_drafter(root / "drafter", target=target)
    make_char_tokenizer(root / "target", chat_template)
    spec = {
        "name": "tiny", "model": {"target": "target", "drafter": "drafter"},
        "tree": {"top_k": 4, "depth": 3, "total_tokens": 12},
        "limits": limits,
        "build": {"backend": "torch", "device": "cpu", "output_dir": "out"},
    }
    if schedule:
        spec["schedule"] = schedule
    return spec


def write_recipe_toml(spec: dict, path) -> None:
    """A recipe dict as a TOML file for the CLI (tables of scalars; lists of tables inline)."""
    import json

    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, bool):
            return "true" if v else "false"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    for table, body in spec.items():
        if isinstance(body, dict):
            lines += [f"[{table}]"] + [f"{k} = {value(v)}" for k, v in body.items()]
    path.write_text("\n".join(lines) + "\n")


def serve_tiny_deployment(root, limits: dict, schedule: dict | None = None):
    """Generator for a module fixture: yields {"server", "recipe", "root"} and stops the server after.
    Skips, with the reason, where tritonserver cannot run here."""
    from griffin_trt.recipe import recipe_from_dict
    from griffin_trt.serving.repository import fill_repository
    from griffin_trt.serving.server import ServerError, TritonServer

    skip_unless_tritonserver_runs()
    recipe = recipe_from_dict(tiny_recipe_spec(root, limits, schedule), base=root)
    repo = fill_repository(recipe, recipe.output_dir)
    server = TritonServer(repo, log_path=root / "tritonserver.log")
    try:
        server.start(timeout=240)
    except ServerError as e:
        pytest.fail(f"tritonserver did not start: {e}")
    yield {"server": server, "recipe": recipe, "root": root}
    server.stop()
    assert not server.is_alive()


def greedy_reference(root):
    """greedy(ids, n): transformers' own greedy decoding of the tiny target in `root` (cached, thread-safe);
    greedy.tokenizer is its tokenizer."""
    import torch
    from runtime_helpers import hf_greedy
    from transformers import AutoTokenizer, LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(root / "target").eval()
    tok = AutoTokenizer.from_pretrained(root / "target")
    cache = {}
    lock = threading.Lock()

    def greedy(ids, n):
        key = (tuple(ids), n)
        with lock:
            if key not in cache:
                with torch.no_grad():
                    cache[key] = hf_greedy(model, list(ids), n)
            return cache[key]

    greedy.tokenizer = tok
    return greedy


def infer_inputs(spec):
    """tritonclient InferInputs from (name, array, Triton dtype) triples."""
    import tritonclient.grpc as g

    out = []
    for name, arr, dt in spec:
        t = g.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def stream_responses(url, model, spec, params=None, until_final=False, timeout=120, cancel=False):
    """Send one request on a gRPC stream of its own; return its (result, error) responses: the first
    only, or (until_final) all of them up to the final response or the first error. The stream is
    closed (cancelling the request when `cancel`) before this returns."""
    import queue

    import tritonclient.grpc as g

    c = g.InferenceServerClient(url)
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    got = []
    try:
        c.async_stream_infer(model, infer_inputs(spec), parameters=params, enable_empty_final_response=True)
        while True:
            result, error = q.get(timeout=timeout)
            got.append((result, error))
            if not until_final or error is not None:
                return got
            if result.get_response().parameters.get("triton_final_response").bool_param:
                return got
    finally:
        c.stop_stream(cancel_requests=cancel)
        c.close()


def griffin_metrics(server) -> dict[str, float]:
    """The server's `griffin_*` Prometheus samples: {name with labels: value}."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("griffin_"):
            name, v = line.rsplit(" ", 1)
            out[name] = float(v)
    return out


def metric_total(values, family, **labels) -> float:
    """The sum of a family's samples whose labels include `labels`."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in values.items() if k.startswith(family + "{") and all(w in k for w in want))


def settled_metrics(server, timeout=30.0) -> dict[str, float]:
    """The `griffin_*` samples once they stop moving (every row has finished or been freed)."""
    import time

    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        m = griffin_metrics(server)
        if last is not None and m == last:
            return m
        last = m
        time.sleep(0.3)
    return last
