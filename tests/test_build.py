"""`griffin-trt build`: output layout, manifest, refusal paths, and atomic replacement."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from griffin_trt.builders import build_engines as be  # noqa: E402
from griffin_trt.builders.manifest import (  # noqa: E402
    FILE_KEYS,
    ManifestError,
    check_tensorrt_version,
    read_manifest,
)
from griffin_trt.recipe import load_recipe  # noqa: E402
from tiny_models import make_drafter, make_target  # noqa: E402

VOCAB, HIDDEN = 96, 32


def make_tokenizer(folder: Path, vocab: int = VOCAB) -> None:
    """A word-level tokenizer over `w3 .. w{vocab-1}` with <unk>/<s>/</s> = 0/1/2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tk = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(
        str(folder)
    )


RECIPE = """name = "tiny"
[model]
target = "target"
drafter = "{drafter}"
[tree]
top_k = 4
depth = 3
total_tokens = 10
[limits]
max_batch = 2
max_input_len = 16
max_output_len = 16
[build]
backend = "{backend}"
output_dir = "engines/tiny"
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("ws")
    target = make_target(root / "target", vocab=VOCAB, hidden=HIDDEN, eos=2)
    make_tokenizer(target)
    make_drafter(root / "drafter", target=target, hidden=HIDDEN, vocab=VOCAB)
    bad = root / "bad_drafter"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"hidden_size": HIDDEN}))  # incomplete: load fails
    return root


def write_recipe(root: Path, name: str = "recipe.toml", drafter: str = "drafter", backend: str = "onnxruntime"):
    path = root / name
    path.write_text(RECIPE.format(drafter=drafter, backend=backend))
    return load_recipe(path)


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def built(workspace):
    recipe = write_recipe(workspace)
    out = be.build(recipe, progress=False, onnx_exporter="torchscript")
    return recipe, out


def test_build_layout_and_manifest(built, workspace):
    recipe, out = built
    assert out == (workspace / "engines" / "tiny").resolve()
    m = read_manifest(out, verify_hashes=True)
    assert m["format"] == 1 and m["name"] == "tiny"
    assert m["recipe"] == json.loads(json.dumps(recipe.to_dict()))
    assert m["backend"] == "onnxruntime" and m["dtype"] == "float32"
    assert m["tree"] == {"top_k": 4, "depth": 3, "total_tokens": 10, "choices": None}
    assert m["limits"] == {"max_batch": 2, "max_input_len": 16, "max_output_len": 16}
    assert m["target_kv_len"] == recipe.target_kv_len and m["drafter_kv_len"] == recipe.drafter_kv_len
    assert m["vocab_size"] == VOCAB and m["hidden_size"] == HIDDEN
    assert m["eos_token_ids"] == [2]
    assert set(m["files"]) == set(FILE_KEYS)
    assert m["files"]["target_onnx"] == "target.onnx" and m["files"]["drafter_onnx"] == "drafter.onnx"
    assert m["files"]["tokenizer"] == "tokenizer"
    assert m["files"]["target_engine"] is None and m["files"]["plugin"] is None
    # the TorchScript exporter cannot write TensorScatter (opset 24): copy-flavour KV caches
    assert m["kv_flavour"] == "copy" and any(n.startswith("KV caches: copy flavour") for n in m["notes"])
    assert {"target.onnx", "drafter.onnx", "tokenizer/tokenizer.json"} <= set(m["sha256"])
    assert set(m["versions"]) == {"griffin_trt", "torch", "transformers", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx"}
    assert m["tensorrt_library"] is None and m["engines"] is None
    assert m["versions"]["torch"] == torch.__version__
    assert m["gpu"] is None or isinstance(m["gpu"], str)
    if m["versions"]["tensorrt"] is None:
        assert any(n.startswith("TensorRT not available (") for n in m["notes"])
    assert (out / "tokenizer" / "tokenizer_config.json").is_file()
    # the draft-tree step as plugin nodes TensorRT's ONNX parser maps to griffin::DraftTree*
    import onnx

    for key, op in (("tree_expand_onnx", "DraftTreeExpand"), ("tree_finalize_onnx", "DraftTreeFinalize")):
        graph = onnx.load(out / m["files"][key])
        node = next(n for n in graph.graph.node if n.op_type == op)
        assert {a.name: a for a in node.attribute}["plugin_namespace"].s == b"griffin"
        assert m["files"][key] in m["sha256"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not left private like a temp dir
    assert not leftovers(out.parent, out.name)


def test_built_graphs_serve_through_make_executor(built):
    from griffin_trt.runtime.executors import make_executor

    _, out = built
    ex = make_executor("onnxruntime", build_dir=out, max_batch=None)
    assert ex.spec.max_batch == 2 and ex.spec.top_k == 4
    ex.reset(1)
    S = ex.spec.target_kv_len
    tok = torch.tensor([[5, 6, 7]])
    pos = torch.arange(3)[None]
    mask = torch.arange(S)[None, None, :] <= pos[:, :, None]
    logits, hidden = ex.target_step(tok, pos, pos, mask)
    assert logits.shape == (1, 3, VOCAB) and logits.dtype == torch.float32 and hidden.shape == (1, 3, HIDDEN)
    assert torch.isfinite(logits).all()


def test_failed_build_leaves_existing_output_untouched(built, workspace, monkeypatch):
    _, out = built
    before = snapshot(out)
    # 1) a drafter folder that does not load
    bad = write_recipe(workspace, "bad.toml", drafter="bad_drafter")
    with pytest.raises(ValueError, match="drafter config lacks"):
        be.build(bad, progress=False, onnx_exporter="torchscript")
    assert snapshot(out) == before
    assert not leftovers(out.parent, out.name)

    # 2) an exception in the middle of the build (after the graphs were exported)
    from griffin_trt.builders import tensorrt_engine

    def boom(library=None):
        raise RuntimeError("simulated failure mid-build")

    monkeypatch.setattr(tensorrt_engine, "available", boom)
    good = write_recipe(workspace, "good.toml")
    with pytest.raises(RuntimeError, match="simulated failure mid-build"):
        be.build(good, progress=False, onnx_exporter="torchscript")
    assert snapshot(out) == before
    assert not leftovers(out.parent, out.name)
    read_manifest(out, verify_hashes=True)


def test_rebuild_replaces_output_and_cleans_up(built, workspace, tmp_path):
    recipe, _ = built
    out = tmp_path / "rebuilt"
    be.build(recipe, out, progress=False, onnx_exporter="torchscript")
    (out / "stale.txt").write_text("from the previous build")
    be.build(recipe, out, progress=False, onnx_exporter="torchscript", backend="torch")
    assert not (out / "stale.txt").exists()
    assert read_manifest(out)["backend"] == "torch"
    assert not leftovers(tmp_path, "rebuilt")


def test_refuses_to_replace_a_folder_that_is_not_a_build(built, tmp_path):
    recipe, _ = built
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(be.BuildError, match="not a griffin-trt build"):
        be.build(recipe, precious, progress=False, onnx_exporter="torchscript")
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_tensorrt_recipe_without_tensorrt_falls_back_to_onnxruntime(workspace, tmp_path, monkeypatch):
    from griffin_trt.builders import tensorrt_engine

    monkeypatch.setattr(tensorrt_engine, "available", lambda library=None: (False, "simulated: no GPU"))
    recipe = write_recipe(workspace, "trt.toml", backend="tensorrt")
    out = be.build(recipe, tmp_path / "trt", progress=False, onnx_exporter="torchscript")
    m = read_manifest(out)
    assert m["backend"] == "onnxruntime"
    assert "TensorRT not available (simulated: no GPU): built ONNX graphs only; the onnxruntime back end serves them" in m["notes"]
    with pytest.raises(ManifestError, match="no TensorRT engines"):
        read_manifest(out, backend="tensorrt")


def test_read_manifest_errors(built, tmp_path):
    _, out = built
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(empty)
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(empty)
    m = json.loads((out / "manifest.json").read_text())
    (empty / "manifest.json").write_text(json.dumps(dict(m, format=99)))
    with pytest.raises(ManifestError, match="format 99 is not supported"):
        read_manifest(empty)
    (empty / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="missing: target_onnx"):
        read_manifest(empty)

    # hash mismatch: copy the build, then change a graph
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    read_manifest(copy, verify_hashes=True)
    with open(copy / "drafter.onnx", "ab") as f:
        f.write(b"\0")
    read_manifest(copy)  # without verification it loads
    with pytest.raises(ManifestError, match="drafter.onnx \\(checksum differs\\)"):
        read_manifest(copy, verify_hashes=True)


def test_kv_flavour_follows_the_host_tensorrt():
    pick = be._pick_flavour
    assert pick("auto", None, "dynamo")[0] == "inplace"  # onnxruntime serves the graphs
    assert pick("auto", "10.15.1.29", "dynamo")[0] == "inplace"
    assert pick("auto", "11.4.0.106", "dynamo")[0] == "inplace"
    assert pick("auto", "10.14.1.48.post1", "dynamo")[0] == "copy"
    assert pick("auto", "10.9.0.34", "dynamo")[0] == "copy"
    assert pick("auto", "11.4.0.106", "torchscript")[0] == "copy"
    assert pick("copy", "11.4.0.106", "dynamo")[0] == "copy"
    with pytest.raises(be.BuildError, match="need TensorRT >= 10.15; this host has TensorRT 10.9.0.34"):
        pick("inplace", "10.9.0.34", "dynamo")
    with pytest.raises(be.BuildError, match="dynamo exporter"):
        pick("inplace", None, "torchscript")


def test_tensorrt_version_mismatch_is_refused():
    m = {"files": {"target_engine": "target.plan", "drafter_engine": "drafter.plan"}, "versions": {"tensorrt": "10.8.0"}}
    with pytest.raises(ManifestError, match="built with TensorRT 10.8.0 but this host has TensorRT 11.0.1"):
        check_tensorrt_version(m, "b", installed="11.0.1")
    assert check_tensorrt_version(m, "b", installed="10.8.0") == "10.8.0"


def test_cli_build_and_light_import(workspace, tmp_path):
    from griffin_trt.cli import main

    out = tmp_path / "cli_out"
    write_recipe(workspace)
    rc = main(["build", "--recipe", str(workspace / "recipe.toml"), "--out", str(out), "--quiet",
               "--exporter", "torchscript", "--skip-engines"])
    assert rc == 0
    assert any("--skip-engines" in n for n in read_manifest(out)["notes"])
    code = (
        "import sys, griffin_trt.builders.build_engines, griffin_trt.builders.manifest;"
        "heavy = [m for m in ('torch', 'onnx', 'transformers', 'onnxruntime', 'tensorrt') if m in sys.modules];"
        "sys.exit(f'heavy imports: {heavy}' if heavy else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_backend_tensorrt_by_name_fails_without_tensorrt(workspace, tmp_path, monkeypatch):
    from griffin_trt.builders import tensorrt_engine
    from griffin_trt.cli import main

    monkeypatch.setattr(tensorrt_engine, "available", lambda library=None: (False, "simulated: no GPU"))
    recipe = write_recipe(workspace)
    with pytest.raises(be.BuildError, match=r"--backend tensorrt needs TensorRT .*simulated: no GPU"):
        be.build(recipe, tmp_path / "trt", progress=False, backend="tensorrt", onnx_exporter="torchscript")
    assert not (tmp_path / "trt").exists() and not leftovers(tmp_path, "trt")
    rc = main(["build", "--recipe", str(workspace / "recipe.toml"), "--out", str(tmp_path / "trt"), "--quiet",
               "--backend", "tensorrt"])
    assert rc == 1 and not (tmp_path / "trt").exists()


def _build_cmd(workspace, out):
    if not (workspace / "recipe.toml").is_file():  # these tests must not depend on another test having run first
        write_recipe(workspace)
    # The default (dynamo) exporter: its seconds of tracing keep the build running while the test
    # signals it; a TorchScript build of the tiny pair can finish before the signal lands.
    return [sys.executable, "-m", "griffin_trt.cli", "build", "--recipe", str(workspace / "recipe.toml"),
            "--out", str(out), "--quiet"]


def _wait_for_tmp(parent, name, proc, timeout=120):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        tmp = [p for p in parent.glob(f".{name}.building-*") if (p / be.BUILD_LOCK).is_file()]
        if tmp:
            return tmp[0]
        time.sleep(0.1)
    raise AssertionError("the build never created its temporary folder")


def test_killed_build_leaves_a_folder_that_the_next_build_removes(workspace, tmp_path):
    import os
    import signal

    out = tmp_path / "killed"
    proc = subprocess.Popen(_build_cmd(workspace, out), cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stale = _wait_for_tmp(tmp_path, "killed", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert stale.is_dir()  # SIGKILL runs no clean-up
    busy = Path(tempfile_mkdtemp(tmp_path, ".killed.building-"))  # a running build's folder: locked
    holder = be._hold_build_lock(busy)
    unrelated = tmp_path / ".killed.building"  # not ours by name: left alone
    unrelated.mkdir()
    try:
        be.build(write_recipe(workspace), out, progress=False, onnx_exporter="torchscript")
        assert not stale.exists()
        assert busy.is_dir() and unrelated.is_dir()
        assert read_manifest(out)["name"] == "tiny" and not (out / be.BUILD_LOCK).exists()
    finally:
        holder.close()
    assert be.remove_stale_builds(out) == [busy]


def tempfile_mkdtemp(parent, prefix):
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)


def test_sigint_stops_a_build_cleanly(workspace, tmp_path):
    import os
    import signal

    out = tmp_path / "interrupted"
    # A shell's background job (a CI runner's, `nohup make test &`) starts with SIGINT ignored, and the
    # build would inherit that: give it the default disposition, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen(_build_cmd(workspace, out), cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_tmp(tmp_path, "interrupted", proc)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "griffin-trt build: interrupted" in err
    assert not out.exists() and not leftovers(tmp_path, "interrupted")
