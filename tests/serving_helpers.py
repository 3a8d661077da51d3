"""A tiny GRIFFIN deployment behind a real tritonserver (the pytriton binary on CPU), for the serving
tests: a character tokenizer, a torch-backend repository, the server on free loopback ports, and
transformers' greedy decoding of the tiny target as the lossless ground truth."""
import threading

import pytest

VOCAB = 96


def make_char_tokenizer(folder):
    """A character tokenizer over printable ASCII (ids 0..94) + <unk> (95): offline, exact round trips."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): c - 32 for c in range(32, 127)}
    vocab["<unk>"] = 95
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>").save_pretrained(folder)


def serve_tiny_deployment(root, limits: dict, schedule: dict | None = None):
    """Generator for a module fixture: yields {"server", "recipe", "root"} and stops the server after.
    Skips, with the reason, where tritonserver cannot run here."""
    from tiny_models import make_drafter, make_target

    from griffin_trt.recipe import recipe_from_dict
    from griffin_trt.serving.repository import fill_repository
    from griffin_trt.serving.server import ServerError, TritonServer, check_runnable, find_tritonserver

    try:
        check_runnable(find_tritonserver())
    except ServerError as e:
        pytest.skip(f"tritonserver cannot run here: {e}")
    target = make_target(root / "target", vocab=VOCAB)
    make_drafter(root / "drafter", target=target)
    make_char_tokenizer(root / "target")
    spec = {
        "name": "tiny", "model": {"target": "target", "drafter": "drafter"},
        "tree": {"top_k": 4, "depth": 3, "total_tokens": 12},
        "limits": limits,
        "build": {"backend": "torch", "device": "cpu", "output_dir": "out"},
    }
    if schedule:
        spec["schedule"] = schedule
    recipe = recipe_from_dict(spec, base=root)
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
