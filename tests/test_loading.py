"""Loading targets and GRIFFIN drafters in their released layouts, and every refusal path."""
import json

import pytest
import torch

from griffin_trt.models import CheckpointError, load_drafter, load_pair, load_target
from tiny_models import FAMILIES, make_drafter, make_target


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return make_target(tmp_path_factory.mktemp("target"))


@pytest.mark.parametrize("family", FAMILIES)
def test_target_forward_matches_transformers(tmp_path, family):
    t = load_target(make_target(tmp_path / family, family=family))
    tokens = torch.randint(0, t.vocab_size, (2, 9))
    pos = torch.arange(9).expand(2, 9)
    k, v = t.new_cache(2, 16)
    mask = torch.ones(9, 16, dtype=torch.bool).tril().expand(2, 9, 16)
    logits, hidden, _, _ = t(tokens, pos, pos, mask, k, v)
    with torch.no_grad():
        ref = t.hf(tokens, output_hidden_states=True)
    torch.testing.assert_close(logits, ref.logits.float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden, ref.hidden_states[-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_drafter_loads_both_release_formats(tmp_path, target_dir, fmt):
    d = make_drafter(tmp_path / fmt, fmt=fmt, target=target_dir)
    drafter = load_drafter(d, target_hidden_size=32, target_vocab_size=96)
    saved = (
        torch.load(d / "pytorch_model.bin", weights_only=True)
        if fmt == "bin"
        else __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(d / "model.safetensors"))
    )
    for name, tensor in drafter.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], msg=name)


def test_drafter_embedding_comes_from_target_when_absent(tmp_path, target_dir):
    pair = load_pair(target_dir, make_drafter(tmp_path / "noemb", with_embedding=False), top_k=4)
    assert torch.equal(pair.drafter.embed_tokens.weight, pair.target.embed_tokens.weight)


def test_qwen2_style_qkv_bias_drafter(tmp_path, target_dir):
    d = make_drafter(tmp_path / "q", qkv_bias=True)
    drafter = load_drafter(d, 32, 96)
    assert drafter.layers[0].self_attn.k_proj.bias is not None


@pytest.mark.parametrize("dropped", [("q", "k", "v"), ("k",)])
def test_qkv_bias_config_without_bias_tensors_loads_zero_bias(tmp_path, dropped):
    """GRIFFIN's Qwen2 release: config says qkv_bias true, the file (read strictly by the reference,
    whose module has no q/k/v bias) holds none. Absent biases are zeros; present ones still load."""
    d = make_drafter(tmp_path / "q", qkv_bias=True)
    from safetensors.torch import load_file

    full = load_file(str(d / "model.safetensors"))
    names = [f"layers.0.self_attn.{n}_proj.bias" for n in dropped]
    for n in names:
        full[n].uniform_(0.5, 1.0)  # nonzero, so a zero after loading means "filled in"
    _edit(d, lambda sd: sd.update({k: v for k, v in full.items() if k.endswith("_proj.bias")}))
    _edit(d, lambda sd: [sd.pop(n) for n in names])
    drafter = load_drafter(d, 32, 96)
    attn = drafter.layers[0].self_attn
    for n in "qkv":
        bias = getattr(attn, f"{n}_proj").bias
        if n in dropped:
            assert torch.count_nonzero(bias) == 0, n
        else:
            torch.testing.assert_close(bias, full[f"layers.0.self_attn.{n}_proj.bias"])
    # any other missing tensor is still refused, and a bias without qkv_bias is unexpected
    _edit(d, lambda sd: sd.pop("layers.0.self_attn.o_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: \['layers.0.self_attn.o_proj.weight'\]"):
        load_drafter(d, 32, 96)
    plain = make_drafter(tmp_path / "plain")
    _edit(plain, lambda sd: sd.update({"layers.0.self_attn.q_proj.bias": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        load_drafter(plain, 32, 96)


def _edit(folder, fn):
    from safetensors.torch import load_file, save_file

    sd = load_file(str(folder / "model.safetensors"))
    fn(sd)
    save_file(sd, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("fc.fc.bias"), "missing tensors: ['fc.fc.bias']"),
        (lambda sd: sd.update(extra=torch.zeros(1)), "unexpected tensors: ['extra']"),
        (lambda sd: sd.update({"layers.0.mlp.down_proj.weight": torch.zeros(32, 48)}),
         "layers.0.mlp.down_proj.weight has shape [32, 48], expected [64, 48]"),
        (lambda sd: sd.pop("embed_tokens.weight"), "missing tensors: ['embed_tokens.weight']"),
    ],
)
def test_bad_drafter_tensors_are_named(tmp_path, edit, message):
    d = _edit(make_drafter(tmp_path / "bad"), edit)
    with pytest.raises(CheckpointError) as e:
        load_drafter(d, 32, 96)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(hidden=48, heads=4), "drafter hidden_size 48 != target hidden_size 32"),
        (dict(vocab=100), "drafter vocab_size 100 != target vocab_size 96"),
    ],
)
def test_drafter_for_another_target_is_refused(tmp_path, target_dir, kw, message):
    d = make_drafter(tmp_path / "other", **kw)
    with pytest.raises(CheckpointError, match=message):
        load_pair(target_dir, d, top_k=4)


def test_bad_folders_and_configs(tmp_path, target_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_drafter(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_drafter(tmp_path / "empty")
    d = make_drafter(tmp_path / "noweights")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        load_drafter(d)
    d = make_drafter(tmp_path / "twolayers")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    with pytest.raises(CheckpointError, match="one decoder layer"):
        load_drafter(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_drafter(d)


def test_unsupported_target_family_is_refused(tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        load_target(tmp_path / "gpt2")


def test_demo_pair_loads_through_release_loader(repo_root):
    from griffin_trt.recipe import load_recipe

    r = load_recipe(repo_root / "build" / "demo.toml")
    pair = load_pair(r.target, r.drafter, top_k=r.tree.top_k)
    assert pair.drafter.config.hidden_size == pair.target.hidden_size
    assert (r.drafter / "config.json").is_file()
    assert sum(f.stat().st_size for f in r.target.parent.rglob("*.safetensors")) < 80e6  # committed-size budget
