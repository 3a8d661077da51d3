"""Real TensorRT engines on every CI run: TensorRT for RTX builds ahead of time on a CPU-only host.

`scripts/trt_rtx.py` installs the `rtx` extra's TensorRT-RTX (real libraries) into .cache/tensorrt-rtx/
once; each build runs `griffin-trt build --backend tensorrt-rtx` in a subprocess with it on PYTHONPATH.
What a GPU would add (deserializing, `get_aliased_input_tensor`, running) is tests/test_trt.py's.

For every build: the engines are written, non-empty and hashed in the manifest; the parsed networks
hold one KV-cache update layer per cache, from each cache input to its output (so a GPU updates the
caches in place); and the executor, run over stand-in engines that have exactly the I/O names, dtypes,
shapes and profile ranges the build read back from its networks and configs, binds every engine tensor
in every profile it uses.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import _fake_trt as ft
import real_shapes
from griffin_trt.builders.kv_layout import cache_pairs
from griffin_trt.builders.manifest import read_manifest, sha256_file
from griffin_trt.builders.trt_library import DATACENTER_ONLY_API, RTX_ONLY_API
from griffin_trt.models.target import TORCH_DTYPES
from griffin_trt.runtime.executors.trt_executor import TrtExecutor

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "scripts"))

import trt_rtx  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rtx() -> trt_rtx.Rtx:
    try:
        return trt_rtx.ensure()
    except trt_rtx.Unavailable as e:
        pytest.skip(f"TensorRT-RTX cannot be installed here: {e}")


def _build(rtx, recipe: Path, out: Path) -> dict:
    cmd = [sys.executable, "-m", "griffin_trt.cli", "build", "--recipe", str(recipe), "--out", str(out), "--backend",
           "tensorrt-rtx", "--quiet"]
    proc = subprocess.run(cmd, env=rtx.env(), capture_output=True, text=True, cwd=HERE.parent, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_manifest(out, verify_hashes=True)


def _check_build(rtx, out: Path, m: dict, layers: int) -> None:
    assert m["backend"] == "tensorrt-rtx" and m["tensorrt_library"] == "tensorrt-rtx"
    assert m["versions"]["tensorrt_rtx"] == rtx.version and m["versions"]["tensorrt"] is None
    assert m["gpu"] is None and m["files"]["tree_expand_engine"] is None  # no GPU, no plugins
    for key, caches in (("target", 2 * layers), ("drafter", 2)):
        plan = out / m["files"][f"{key}_engine"]
        summary = m["engines"][key]
        assert plan.stat().st_size > 1 << 20 and summary["bytes"] == plan.stat().st_size
        assert m["sha256"][plan.name] == sha256_file(plan)
        # one KV-cache update layer per cache, read from the parsed network: cache input -> its output
        assert summary["aliases"] == {o: i for i, o in cache_pairs(summary["inputs"])}
        assert len(summary["aliases"]) == caches
        assert summary["attention_layers"] == caches // 2
    _check_executor_binds_the_engines(out, m)


def _check_executor_binds_the_engines(out: Path, m: dict) -> None:
    """Load the executor over stand-ins with the built engines' I/O and profiles; call every profile at its
    largest T and batch; every launch binds every engine tensor, at shapes the profile accepts."""
    fake = out.parent / f"{out.name}-fake"
    fake.mkdir()
    ft.write_engines_from_summaries(fake, m)
    trt = ft.module()
    ex = TrtExecutor(fake, m, device="cpu", trt=trt, runtime=trt.Runtime())
    dtype = TORCH_DTYPES[m["dtype"]]
    assert ex.spec.feature_dtype == dtype and ex.target.cache_dtype() == ex.drafter.cache_dtype() == dtype
    b = m["limits"]["max_batch"]
    ex.reset(b)
    s_t, s_d, h = m["target_kv_len"], m["drafter_kv_len"], m["hidden_size"]
    for prof in ex.target.profiles:
        t = prof.t_max
        pos = torch.arange(t).expand(b, t)
        ex.target_step(torch.zeros(b, t, dtype=torch.long), pos, pos, torch.ones(b, t, s_t, dtype=torch.bool),
                       logit_index=torch.full((b, 1), t - 1))
    for prof in ex.drafter.profiles:
        t = prof.t_max
        pos = torch.arange(t).expand(b, t)
        ex.draft_step(torch.zeros(b, t, h), torch.zeros(b, t, dtype=torch.long), pos, pos,
                      torch.ones(b, t, s_d, dtype=torch.bool))
    for e in (ex.target, ex.drafter):
        io = set(e.inputs) | set(e.outputs)
        assert all(c.launches for c in e.engine.contexts), f"{e.path.name}: a profile was never used"
        for c in e.engine.contexts:
            assert set(c.launches[-1]) == io
    shutil.rmtree(fake)


def test_demo_recipe_builds_with_tensorrt_rtx(rtx, repo_root, tmp_path):
    """The shipped demo recipe as it is: float32 (attention decomposed), 12 layers."""
    out = tmp_path / "demo"
    m = _build(rtx, repo_root / "build" / "demo.toml", out)
    _check_build(rtx, out, m, layers=12)
    assert "float32 attention has no fused TensorRT kernel: it runs decomposed (BMM + softmax + BMM)" in m["notes"]
    print(f"demo: target {m['engines']['target']['build_s']} s {m['engines']['target']['bytes'] / 1e6:.1f} MB, "
          f"drafter {m['engines']['drafter']['build_s']} s {m['engines']['drafter']['bytes'] / 1e6:.1f} MB")


def _chains(script_args: list[str], env: dict) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "_trt_api_resolve.py"), *script_args], env=env,
                          capture_output=True, text=True, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@CHAINS@@")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("@@CHAINS@@"):])


def _missing_api(report: dict) -> dict[str, list[str]]:
    """{API name as in trt_library's lists: where our source calls it} for every chain that does not resolve."""
    out: dict[str, list[str]] = {}
    for chain in report["chains"].values():
        problem = chain["problem"]
        if problem is None:
            continue
        m = re.fullmatch(r"no module `(.+)`", problem) or re.fullmatch(r"(.+) has no attribute `(.+)`", problem)
        assert m, problem
        out.setdefault(".".join(m.groups()), []).extend(chain["where"])
    return out


def test_api_differences_between_the_libraries_for_calls_our_source_uses(rtx):
    """Every TensorRT call our source makes (read from its AST), resolved in TensorRT-RTX and in datacenter
    TensorRT 11: what one library lacks is exactly what trt_library.py says only the other one is used for."""
    sys.path.insert(0, str(HERE.parent / "scripts"))
    import trt_bindings

    try:
        datacenter = trt_bindings.ensure("11")
    except trt_bindings.Unavailable as e:
        pytest.skip(f"TensorRT 11 bindings unavailable here: {e}")
    in_rtx = _chains(["--rtx"], rtx.env())
    in_datacenter = _chains([], datacenter.env())
    assert in_rtx["chains"].keys() == in_datacenter["chains"].keys()
    rtx_lacks, datacenter_lacks = _missing_api(in_rtx), _missing_api(in_datacenter)
    print(f"\nTensorRT-RTX {in_rtx['version']} lacks (datacenter TensorRT only):")
    for api, where in sorted(rtx_lacks.items()):
        print(f"  {api}  [{', '.join(sorted(set(where))[:3])}]")
    print(f"TensorRT {in_datacenter['version']} lacks (TensorRT-RTX only):")
    for api, where in sorted(datacenter_lacks.items()):
        print(f"  {api}  [{', '.join(sorted(set(where))[:3])}]")
    assert set(rtx_lacks) == set(DATACENTER_ONLY_API)
    assert set(datacenter_lacks) <= set(RTX_ONLY_API)  # TensorRT 11 has IRuntimeConfig; 10.x lacks it too
    assert in_rtx["fakes"]["ok"], in_rtx["fakes"]["detail"]  # the executor's stand-ins match TensorRT-RTX's classes


REAL_LAYERS = 2  # target decoder layers: two, so caches of more than one layer are indexed and aliased


REAL_MODELS = list(real_shapes.SHAPES)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_shapes_build_in_bfloat16(rtx, name, tmp_path):
    """Random weights at the shapes users bring (tests/real_shapes.py says what is real and what is
    reduced, and why), GRIFFIN's default tree, bfloat16: the target and drafter graphs parse and build.
    The weights dominate the time (a 128256 x 4096 bfloat16 embedding is 1 GB, written as checkpoint,
    graph and engine), so each model's files are removed as soon as it is checked."""
    target, drafter = real_shapes.make_pair(tmp_path, name, REAL_LAYERS)
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(f'name = "{name}"\n[model]\ntarget = "{target}"\ndrafter = "{drafter}"\ndtype = "bfloat16"\n'
                      "[tree]\ntop_k = 10\ndepth = 5\ntotal_tokens = 60\n"
                      "[limits]\nmax_batch = 2\nmax_input_len = 1024\nmax_output_len = 1024\n")
    out = tmp_path / "out"
    m = _build(rtx, recipe, out)
    shutil.rmtree(target), shutil.rmtree(drafter)
    hidden = real_shapes.SHAPES[name][1]["hidden_size"]
    assert m["hidden_size"] == hidden and m["vocab_size"] == real_shapes.SHAPES[name][1]["vocab_size"]
    _check_build(rtx, out, m, layers=REAL_LAYERS)
    e = m["engines"]
    print(f"{name}: target {e['target']['build_s']} s {e['target']['bytes'] / 1e6:.0f} MB, "
          f"drafter {e['drafter']['build_s']} s {e['drafter']['bytes'] / 1e6:.0f} MB")
    shutil.rmtree(out)


def _gpu_skip_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU: TensorRT-RTX engines run (and compile their kernels) on a GPU only"
    major, minor = torch.cuda.get_device_capability()
    if f"SM{major}{minor}" not in ft.ComputeCapability.__members__:
        return (f"{torch.cuda.get_device_name()} (compute capability {major}.{minor}) is not a TensorRT-RTX GPU; "
                "H100/H200 deployments use --backend tensorrt")
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_skip_reason() is not None, reason=str(_gpu_skip_reason()))
def test_rtx_engines_generate_what_torch_generates_on_a_gpu(rtx, repo_root, tmp_path):
    """A100 / RTX hosts: the demo's TensorRT-RTX engines, through `griffin-trt generate`, give torch's greedy
    tokens, and the just-in-time kernels land in the runtime cache beside the engines."""
    out = tmp_path / "demo"
    _build(rtx, repo_root / "build" / "demo.toml", out)
    prompt = ["--prompt", "def parse_args(argv):", "--max-new-tokens", "32", "--json"]

    def generate(backend):
        proc = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "generate", "--recipe",
                               str(repo_root / "build" / "demo.toml"), "--build-dir", str(out), "--backend", backend,
                               "--device", "cuda", *prompt], env=rtx.env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)["token_ids"]

    assert generate("tensorrt-rtx") == generate("torch")
    assert (out / "runtime.cache").stat().st_size > 0


def test_a_compute_capability_tensorrt_rtx_lacks_is_refused_before_export(rtx, repo_root, tmp_path):
    recipe = tmp_path / "h200.toml"
    text = (repo_root / "build" / "demo.toml").read_text().replace('"../griffin_trt', f'"{repo_root}/griffin_trt')
    recipe.write_text(text.replace('output_dir = "../engines/demo"', 'output_dir = "out"\ncompute_capabilities = ["9.0"]'))
    proc = subprocess.run([sys.executable, "-m", "griffin_trt.cli", "build", "--recipe", str(recipe), "--backend",
                           "tensorrt-rtx", "--quiet"], env=rtx.env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and not (tmp_path / "out").exists()
    assert proc.stderr.strip().splitlines()[-1] == (
        f"griffin-trt build: error: TensorRT-RTX {rtx.version} cannot build for compute capability 9.0 (it targets 7.5, 8.0, "
        "8.6, 8.9, 12.0, 12.1); H100/H200 (9.0) need `--backend tensorrt`")
