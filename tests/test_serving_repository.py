"""Filling the Triton repository, the server launcher's helpers, the light client (no server started)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from griffin_trt.recipe import load_recipe, recipe_from_dict
from griffin_trt.serving import repository as repo_mod
from griffin_trt.serving.repository import MODELS, fill_repository, recipe_as_toml_dict
from griffin_trt.serving.server import ServerError, free_ports, server_env

REPO = Path(__file__).resolve().parent.parent


def _recipe(tmp_path, **limits):
    for d in ("target", "drafter"):
        (tmp_path / d).mkdir(exist_ok=True)
    lim = {"max_batch": 3, "max_input_len": 100, "max_output_len": 40, **limits}
    data = {"name": "t1", "model": {"target": "target", "drafter": "drafter"},
            "tree": {"top_k": 4, "depth": 3, "total_tokens": 12}, "limits": lim,
            "build": {"backend": "torch", "output_dir": "out"}}
    return recipe_from_dict(data, base=tmp_path)


def test_fill_repository_fills_every_placeholder(tmp_path):
    r = _recipe(tmp_path)
    out = fill_repository(r, tmp_path / "out")
    assert out == (tmp_path / "out" / "triton_repo").resolve()
    for m in MODELS:
        text = (out / m / "config.pbtxt").read_text()
        assert "${" not in text, m
        assert f'name: "{m}"' in text
        assert "max_batch_size: 3" in text
    g = (out / "griffin" / "config.pbtxt").read_text()
    assert "decoupled: true" in g
    for key, val in [("max_input_len", "100"), ("max_output_len", "40"), ("dynamic_tree_max_topK", "4"),
                     ("max_total_draft_tokens", "11"), ("max_draft_len", "4"), ("use_dynamic_tree", "true"),
                     ("backend", "torch"), ("build_dir", str((tmp_path / "out").resolve()))]:
        assert re.search(rf'key: "{key}" value: {{ string_value: "{re.escape(val)}" }}', g), key
    assert (out / "griffin" / "1" / "model.py").is_file()
    assert (out / "ensemble" / "1").is_dir()
    assert not list((out).rglob("__pycache__"))
    # the recipe the served runtime sees is the one we filled from
    again = recipe_from_dict(json.loads((out / "griffin" / "recipe.json").read_text()), base=Path("/"))
    assert again.tree == r.tree and again.limits == r.limits and again.target == r.target
    assert recipe_as_toml_dict(again) == recipe_as_toml_dict(r)


def test_fill_repository_replaces_atomically(tmp_path):
    out_dir = tmp_path / "out"
    fill_repository(_recipe(tmp_path), out_dir)
    (out_dir / "triton_repo" / "stale.txt").write_text("old")
    dest = fill_repository(_recipe(tmp_path, max_batch=2), out_dir)
    assert not (dest / "stale.txt").exists()
    assert "max_batch_size: 2" in (dest / "griffin" / "config.pbtxt").read_text()
    assert sorted(p.name for p in out_dir.iterdir()) == ["triton_repo"]  # no temp folders left


def test_fill_repository_static_tree_and_manifest(tmp_path):
    for d in ("target", "drafter"):
        (tmp_path / d).mkdir()
    r = recipe_from_dict({"model": {"target": "target", "drafter": "drafter"},
                          "tree": {"top_k": 3, "choices": [[0], [1], [0, 0], [0, 1], [0, 0, 0]]}}, base=tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({"backend": "onnxruntime"}))
    g = (fill_repository(r, tmp_path / "out") / "griffin" / "config.pbtxt").read_text()
    assert 'key: "use_dynamic_tree" value: { string_value: "false" }' in g
    assert 'key: "max_total_draft_tokens" value: { string_value: "5" }' in g
    assert 'key: "max_draft_len" value: { string_value: "3" }' in g
    assert 'key: "backend" value: { string_value: "onnxruntime" }' in g
    assert str((tmp_path / "out" / "manifest.json").resolve()) in g


def test_unknown_placeholder_is_refused(tmp_path):
    tpl = tmp_path / "tpl"
    import shutil

    shutil.copytree(REPO / "triton_repo", tpl)
    p = tpl / "griffin" / "config.pbtxt"
    p.write_text(p.read_text() + "\n# ${not_a_value}\n")
    with pytest.raises(repo_mod.RepositoryError, match="not_a_value"):
        fill_repository(_recipe(tmp_path), tmp_path / "out", templates=tpl)
    assert not (tmp_path / "out" / "triton_repo").exists()


def test_demo_recipe_fills(tmp_path):
    r = load_recipe(REPO / "build" / "demo.toml", check_paths=False)
    out = fill_repository(r, tmp_path)
    assert f"max_batch_size: {r.limits.max_batch}" in (out / "ensemble" / "config.pbtxt").read_text()
    assert r.schedule.budgets  # the demo adapts speculation to load


def test_ensemble_declares_every_tensorrt_llm_input(tmp_path):
    """A client written for TensorRT-LLM's ensemble finds each of its inputs, with its data type, and
    the griffin model declares each under its own name (the ensemble model tokenizes text_input)."""
    from griffin_trt.serving.trtllm_inputs import INPUTS

    out = fill_repository(_recipe(tmp_path), tmp_path / "out")
    ens = (out / "ensemble" / "config.pbtxt").read_text()
    grf = (out / "griffin" / "config.pbtxt").read_text()
    names = {i.name for i in INPUTS}
    assert {"text_input", "max_tokens", "stream", "temperature", "top_p", "top_k", "seed", "random_seed", "end_id",
            "pad_id", "stop_words", "bad_words", "exclude_input_in_output", "return_perf_metrics", "beam_width",
            "lora_task_id", "guided_decoding_guide"} <= names
    for i in INPUTS:
        # Optional in the ensemble (a missing one is refused by name downstream), required by the models.
        assert f'{{ name: "{i.name}" data_type: {i.dtype} dims: {i.dims} optional: true }}' in ens, i.name
        opt = "" if i.name in ("text_input", "max_tokens") else " optional: true"
        if i.griffin:
            assert f'{{ name: "{i.griffin}" data_type: {i.dtype} dims: {i.dims}{opt} }}' in grf, i.griffin
    for name in ("text_output", "acceptance_length", "total_accepted_draft_tokens", "total_draft_tokens",
                 "num_decode_steps", "arrival_time_ns", "first_scheduled_time_ns", "first_token_time_ns",
                 "last_token_time_ns", "num_input_tokens", "num_output_tokens"):
        assert f'name: "{name}"' in ens, name
    assert "model_transaction_policy { decoupled: true }" in ens and 'backend: "python"' in ens


def test_tree_schedule_reaches_the_served_recipe_and_the_config(tmp_path):
    r = _recipe(tmp_path)
    r = recipe_from_dict({**recipe_as_toml_dict(r), "schedule": {"budgets": [
        {"batch": 2, "total_tokens": 6, "depth": 2}, {"batch": 3, "total_tokens": 1}]}}, base=tmp_path)
    out = fill_repository(r, tmp_path / "out")
    served = recipe_from_dict(json.loads((out / "griffin" / "recipe.json").read_text()), base=Path("/"))
    assert served.schedule == r.schedule and len(r.schedule.budgets) == 2
    g = (out / "griffin" / "config.pbtxt").read_text()
    assert 'key: "tree_schedule" value: { string_value: "1+: 12 tokens depth 3; 2+: 6 tokens depth 2; 3+: plain" }' in g


def test_unsupported_tensorrt_llm_values_are_named():
    import numpy as np

    from griffin_trt.serving.trtllm_inputs import BY_GRIFFIN, check_unsupported

    assert check_unsupported(BY_GRIFFIN["beam_width"], np.array([[1]])) is None
    assert check_unsupported(BY_GRIFFIN["bad_words"], np.array([[b"", b""]], object)) is None
    assert check_unsupported(BY_GRIFFIN["min_tokens"], np.array([[0]])) is None
    assert check_unsupported(BY_GRIFFIN["lora_weights"], np.zeros((1, 0, 4))) is None
    assert "ignored" in check_unsupported(BY_GRIFFIN["pad_id"], np.array([[2]]))
    for name, value, msg in [("beam_width", np.array([[4]]), "beam_width = 4 is not supported"),
                             ("bad_words", np.array([[b"x"]], object), "bad_words = 'x'"),
                             ("frequency_penalty", np.array([[0.5]], np.float32), "frequency_penalty = 0.5"),
                             ("lora_task_id", np.array([[3]], np.uint64), "leave it out")]:
        with pytest.raises(ValueError, match=msg):
            check_unsupported(BY_GRIFFIN[name], value)


def test_free_ports_and_env():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    env = server_env({"PATH": "/usr/bin", "LD_LIBRARY_PATH": ""})
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_missing_repository_is_a_clear_error(tmp_path):
    from griffin_trt.serving.server import TritonServer

    with pytest.raises(ServerError, match="does not exist"):
        TritonServer(tmp_path / "nope").start()


def test_light_modules_do_not_import_torch():
    code = ("import sys, griffin_trt.client.client, griffin_trt.client.bench, griffin_trt.serving.server, "
            "griffin_trt.serving.repository; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
