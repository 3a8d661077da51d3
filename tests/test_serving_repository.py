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
    assert "max_batch_size: 4" in (out / "ensemble" / "config.pbtxt").read_text()


def test_ensemble_uses_tensorrt_llm_names():
    text = (REPO / "triton_repo" / "ensemble" / "config.pbtxt").read_text()
    for name in ("text_input", "max_tokens", "temperature", "top_p", "top_k", "stream", "end_id", "random_seed",
                 "text_output", "speculative", "acceptance_length", "total_accepted_draft_tokens",
                 "total_draft_tokens", "num_decode_steps", "arrival_time_ns", "first_token_time_ns",
                 "last_token_time_ns"):
        assert f'name: "{name}"' in text, name


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
