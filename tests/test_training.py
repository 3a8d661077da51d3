"""`griffin-trt train` end to end on tiny random targets: the written drafter loads strictly in the
released layout, decodes token-exactly through the runtime, and a killed run resumes bit-exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from griffin_trt.models import load_drafter, load_pair
from griffin_trt.recipe import Limits, TreeConfig
from griffin_trt.training import TrainConfig, TrainError, train
from runtime_helpers import hf_greedy, make_decoder
from training_helpers import make_target_with_tokenizer, write_corpus

REPO = Path(__file__).resolve().parents[1]

# One layer's key names exactly as GRIFFIN's released checkpoints spell them.
RELEASED_KEYS = {
    "embed_tokens.weight", "fc.fc.weight", "fc.fc.bias", "fc.post_attention_layernorm.weight",
    "fc.mlp.input_layernorm.weight", "fc.mlp.up_proj.weight", "fc.mlp.down_proj.weight",
    "layers.0.self_attn.q_proj.weight", "layers.0.self_attn.k_proj.weight", "layers.0.self_attn.v_proj.weight",
    "layers.0.self_attn.o_proj.weight", "layers.0.mlp.gate_proj.weight", "layers.0.mlp.up_proj.weight",
    "layers.0.mlp.down_proj.weight", "layers.0.post_attention_layernorm.weight",
}


def tiny_config(root: Path, target: Path, corpus_dir: Path, **kw) -> TrainConfig:
    base = dict(
        target=target, corpus=(corpus_dir,), out=root / "drafter", work_dir=root / "work", num_prompts=36,
        prompt_tokens=20, new_tokens=20, gen_batch=8, shard_size=8, intermediate_size=48, passes=(1, 2, 3),
        epochs=(2.0, 1.0, 1.0), lr=(3e-3, 1e-3, 1e-3), batch_size=4, threads=1, eval_prompts=4, eval_new_tokens=16,
        tree=(4, 3, 12), checkpoint_every=4, quiet=True, seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_target_with_tokenizer(tmp_path_factory.mktemp("target") / "t")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, target, corpus):
    root = tmp_path_factory.mktemp("run")
    report = train(tiny_config(root, target, corpus))
    return root, report


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "pytorch_model.bin"
    if path.is_file():
        return torch.load(path, weights_only=True)
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_writes_the_released_layout_that_loads_strictly(trained, target):
    root, report = trained
    out = root / "drafter"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin", "token_counts.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and cfg["qkv_bias"] is False and cfg["hidden_size"] == 32
    assert cfg["num_key_value_heads"] == cfg["num_attention_heads"] and cfg["vocab_size"] == 128
    sd = _weights(out)
    assert set(sd) == RELEASED_KEYS  # nothing more, nothing less: the reference loads it strictly too
    drafter = load_drafter(out, target_hidden_size=32, target_vocab_size=128)
    for k, v in drafter.state_dict().items():
        assert torch.equal(v, sd[k].float()), k
    pair = load_pair(target, out, top_k=4)
    assert torch.equal(pair.drafter.embed_tokens.weight, pair.target.embed_tokens.weight)
    # the report: three stages, and tau measured through the runtime
    assert [s["passes"] for s in report["stages"]] == [1, 2, 3]
    assert report["eval"]["prompts"] == 4 and 1.0 <= report["eval"]["mean_tau"] <= 5.0
    assert json.loads((root / "work" / "report.json").read_text())["eval"]["mean_tau"] == report["eval"]["mean_tau"]
    # phase times for the drafter's README, kept across resumed runs
    times = report["seconds_all_runs"]
    assert set(times) == {"data", "stage_1", "stage_2", "stage_3", "eval"} and min(times.values()) >= 0
    timed = json.loads((root / "work" / "data" / "timing.json").read_text())
    assert sorted(timed) == [str(i) for i in range(report["data"]["shards"])]


def test_without_the_embedding_the_drafter_is_smaller_and_decodes_the_same(trained, target, tmp_path):
    """--no-include-embedding drops the target's frozen embedding copy (most of a real drafter's
    bytes); our loaders take the target's, so drafting is unchanged."""
    from griffin_trt.training.export import write_drafter

    root, _ = trained
    full = root / "drafter"
    drafter = load_drafter(full, target_hidden_size=32, target_vocab_size=128)
    slim = write_drafter(drafter, json.loads((full / "config.json").read_text()), tmp_path / "slim", "safetensors",
                         include_embedding=False)
    assert set(_weights(slim)) == RELEASED_KEYS - {"embed_tokens.weight"}
    with pytest.raises(Exception, match="embed_tokens"):
        load_drafter(slim, target_hidden_size=32, target_vocab_size=128)  # nothing to take it from
    prompts = [[5, 9, 17, 3], [40, 41, 42, 43, 44, 45]]
    outs = []
    for folder in (full, slim):
        dec = make_decoder(target, folder, tree=TreeConfig(4, 3, 12),
                           limits=Limits(max_batch=2, max_input_len=16, max_output_len=16))
        outs.append([(r.token_ids, r.target_forwards) for r in dec.generate(prompts, 16)])
    assert outs[0] == outs[1]


def test_token_counts_are_the_generated_tokens_of_the_data(trained, target):
    """token_counts.json counts exactly the trained (generated) positions of the shards, and a
    recipe's draft vocabulary can be chosen from it."""
    from griffin_trt.models.draft_vocab import load_draft_vocab
    from griffin_trt.training.shards import ShardData

    root, report = trained
    data = ShardData(root / "work" / "data", report["data"]["shards"])
    expected = torch.zeros(128, dtype=torch.int64)
    for i in range(len(data)):
        row = data.batch([i])
        expected += torch.bincount(row["tokens"][row["mask"]], minlength=128)
    counts = json.loads((root / "drafter" / "token_counts.json").read_text())["counts"]
    assert counts == expected.tolist() and sum(counts) == report["token_counts"]["counted_tokens"] > 0
    ids = load_draft_vocab(root / "drafter" / "token_counts.json", 16, vocab_size=128)
    assert ids.numel() == 16 and all(counts[i] >= sorted(counts)[-16] for i in ids.tolist())


def test_trained_drafter_is_token_exact_through_the_loop(trained, target):
    root, _ = trained
    dec = make_decoder(target, root / "drafter", tree=TreeConfig(4, 3, 12),
                       limits=Limits(max_batch=4, max_input_len=32, max_output_len=32))
    hf = dec.ex.pair.target.hf
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 100, (int(n),), generator=g).tolist() for n in (5, 12, 20, 9)]
    for p, r in zip(prompts, dec.generate(prompts, 24)):
        assert r.token_ids == hf_greedy(hf, p, 24, eos=1)


def test_stage_one_learns(trained):
    """From a random drafter, stage 1 (regression + distillation) must bring its loss well down."""
    _, report = trained
    s1 = report["stages"][0]
    assert s1["loss"] < 0.95 * s1["first_loss"], s1


def test_stop_and_resume_is_bit_exact(tmp_path, trained, target, corpus):
    root, whole = trained
    cfg = tiny_config(tmp_path, target, corpus, stop_after=5, eval_prompts=4)
    first = train(cfg)
    assert first["stopped"] and first["steps_done"] == 5 and not (tmp_path / "drafter").exists()
    (tmp_path / "work" / "data" / "shard-00001.safetensors").unlink()  # also lose a data shard
    while (report := train(cfg))["stopped"]:  # 5 steps per invocation, across stage boundaries
        pass
    a, b = _weights(root / "drafter"), _weights(tmp_path / "drafter")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # each stage's first loss survives the resumes (the README reports it)
    assert [s["first_loss"] for s in report["stages"]] == [s["first_loss"] for s in whole["stages"]]


def test_killed_process_resumes_bit_exact(tmp_path, trained, target, corpus):
    """SIGKILL a real `griffin-trt train` once its first checkpoint exists; the rerun finishes with the
    same weights as an uninterrupted run."""
    root, _ = trained
    cfg = tiny_config(tmp_path, target, corpus, checkpoint_every=1, eval_prompts=4)
    args = [sys.executable, "-m", "griffin_trt.cli", "train"]
    for f in fields(TrainConfig):
        v = getattr(cfg, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            args.append(flag if v else "--no-" + f.name.replace("_", "-"))
        elif isinstance(v, tuple):
            args += [flag, *map(str, v)]
        elif v is not None:
            args += [flag, str(v)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "work" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (tmp_path / "drafter").exists(), "killed before its first checkpoint"
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tau" in done.stderr
    a, b = _weights(root / "drafter"), _weights(tmp_path / "drafter")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", ["qwen2", "mistral", "mixtral"])
def test_other_target_families(tmp_path, corpus, family):
    target = make_target_with_tokenizer(tmp_path / "t", family=family)
    cfg = tiny_config(tmp_path, target, corpus, passes=(1, 2), epochs=(1.0, 0.5), lr=(3e-3, 1e-3),
                      weights_format="safetensors", eval_prompts=2)
    report = train(cfg)
    assert report["eval"]["mean_tau"] >= 1.0
    dec = make_decoder(target, tmp_path / "drafter", tree=TreeConfig(4, 3, 12),
                       limits=Limits(max_batch=2, max_input_len=32, max_output_len=32))
    prompts = [[5, 17, 40, 3, 9], [60, 61, 62]]
    for p, r in zip(prompts, dec.generate(prompts, 16)):
        assert r.token_ids == hf_greedy(dec.ex.pair.target.hf, p, 16, eos=1)


def test_drafter_rope_follows_the_target():
    """A LLaMA-3.1 style target (rope_type llama3): the drafter's rotary tables equal the target's."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from griffin_trt.models.drafter import DrafterConfig, _rotary
    from griffin_trt.training.export import drafter_config

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256}
    tc = LlamaConfig(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                     max_position_embeddings=2048, rope_theta=500000.0, rope_scaling=scaling, vocab_size=50)
    dc = drafter_config(tc, None, "bfloat16")
    assert dc["rope_theta"] == 500000.0 and dc["rope_scaling"]["rope_type"] == "llama3"
    assert dc["intermediate_size"] == 96 and dc["num_key_value_heads"] == 4
    x, pos = torch.zeros(1, 5, 64), torch.arange(1000, 1005)[None]
    ours = _rotary(DrafterConfig.from_dict(json.loads(json.dumps(dc))))(x, pos)
    ref = LlamaRotaryEmbedding(tc)(x, pos)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_help_documents_every_option():
    r = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "train", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f.metadata["help"].split()[0] in text
    assert "tau" in text and "resume" in text


@pytest.mark.parametrize("kw, message", [
    (dict(passes=(1, 2), epochs=(1.0,), lr=(1e-3, 1e-3)), "--epochs needs one value per stage"),
    (dict(eval_prompts=40), "--eval-prompts must be in [0, --num-prompts)"),
    (dict(tree=(2, 2, 30)), "--tree 2 2 30"),
    (dict(corpus=(Path("/nonexistent/corpus"),)), "corpus /nonexistent/corpus does not exist"),
])
def test_bad_settings_are_named(tmp_path, target, corpus, kw, message):
    with pytest.raises(ValueError) as e:
        train(tiny_config(tmp_path, target, corpus, **kw))
    assert message in str(e.value)
    assert not (tmp_path / "drafter").exists()


def test_work_dir_made_with_other_settings_is_refused(tmp_path, target, corpus):
    cfg = tiny_config(tmp_path, target, corpus, stop_after=1)
    train(cfg)
    with pytest.raises(TrainError, match="holds data made with other settings \\(new_tokens\\)"):
        train(replace(cfg, new_tokens=12))
    with pytest.raises(TrainError, match="other training settings \\(lr\\)"):
        train(replace(cfg, lr=(1e-3, 1e-3, 1e-3)))


def test_cli_error_is_one_line(tmp_path, target):
    r = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "train", "--target", str(target), "--corpus",
                        str(tmp_path / "missing"), "--out", str(tmp_path / "d")], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("griffin-trt train: error: corpus")
    assert "Traceback" not in r.stderr
