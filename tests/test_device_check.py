"""`make device-check` in CPU mode, as CI runs it so it cannot rot between GPU runs: every step
passes and the JSON holds every figure the GPU run reports, at the small shapes."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import device_check  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "device_check.py"), str(out), "--mode", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    res = json.loads((out / "device_check.json").read_text())
    return proc, res, out


def test_cpu_mode_passes_with_every_figure(report):
    proc, res, out = report
    assert proc.returncode == 0, f"{res.get('error')}\n{json.dumps(res.get('steps'), indent=1)[-4000:]}"
    assert res["ok"] and res["mode"] == "cpu" and res["missing_figures"] == []
    assert all(s["ok"] for s in res["steps"].values()), res["steps"]
    assert res["torch_untouched"] is True
    assert "install_project" in res["steps"] and "cli_help" in res["steps"]
    # the GPU tests exist and were collected; without CUDA they skip with their reason
    g = res["gpu_tests"]
    assert g["collected"] >= 14 and g["failed"] == 0 and g["skipped"] == g["collected"]
    # demo pair: lossless, with and without the reduced draft vocabulary
    for key, s in res["speculative"].items():
        assert s["identical"] == s["prompts"] > 0, key
        assert s["acceptance_length"] >= 1.0 and s["draft_pass_ms"] > 0
    assert res["speculative"]["vocab512"]["env"]["draft_vocab"] == 512
    assert res["speculative"]["full"]["env"]["draft_vocab"] is None
    # the cycle at the small shape: every figure finite and positive
    small = res["cycle"]["shapes"]["small"]
    assert res["cycle"]["copy_bandwidth_gbs"] > 0 and small["bound_weights_ms"] > 0
    for b in ("1", "4", "8"):
        r = small["batches"][b]
        figures = [r["plain_ms"], r["draft_pass_ms"], r["draft_update_ms"], *r["verify_ms"].values(),
                   *r["tree_ms"].values(), *r["cycle_ms"].values(), *r["projected_speedup"].values(),
                   *r["draft_pass_reduced_ms"].values(), *r["loop"]["projected_speedup"].values()]
        assert all(math.isfinite(x) and x > 0 for x in figures), (b, r)
        assert set(r["verify_ms"]) == {"1", "16", "32", "60"} and set(r["draft_pass_reduced_ms"]) == {"1024", "2048"}
    md = (out / "device_check.md").read_text()
    assert md.startswith("# Device check (cpu mode): PASSED")
    assert "One GRIFFIN cycle at model shapes" in md and "N = 1024" in md
    assert (out / "device_check.log").stat().st_size > 0


def test_a_missing_figure_fails_the_check(report):
    _, res, _ = report
    del res["cycle"]["shapes"]["small"]["batches"]["4"]["verify_ms"]["32"]
    res["speculative"]["vocab1024"] = None
    miss = device_check.missing_figures(res, "cpu")
    assert "cycle.shapes.small.batches.4.verify_ms.32" in miss
    assert "speculative.vocab1024.draft_pass_ms" in miss
    # a GPU run must report both real shapes and kernel timings
    gpu_miss = device_check.missing_figures(res, "gpu")
    assert "cycle.shapes.llama3-8b.batches.1.plain_ms" in gpu_miss and "tree_kernels.batch1.expand" in gpu_miss


def test_gpu_plan_fits_the_device_limits():
    """Steps of a GPU run: each has its own limit, all inside the 10-minute command of the GPU host."""
    steps = device_check.plan("gpu")
    names = [n for n, _, _ in steps]
    assert names[0] == "gpu_tests" and {"cycle_llama3-8b", "cycle_vicuna-7b", "tree_kernels"} <= set(names)
    assert all(0 < cap <= 300 for _, cap, _ in steps)
    assert any("--check" in argv for _, _, argv in steps)


def test_a_hung_step_is_stopped_at_its_limit_and_the_budget_is_kept(tmp_path):
    import time

    log = tmp_path / "log"
    log.write_text("")
    runner = device_check.Runner(log, time.monotonic() + 60, dict())
    t0 = time.monotonic()
    # the child starts a grandchild in its group: both must go
    hang = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
    rec = runner.run("hang", 2, [sys.executable, "-c", hang])
    assert rec["timed_out"] and not rec["ok"] and rec["error"] == "timed out after 2 s"
    assert time.monotonic() - t0 < 20
    assert runner.run("fine", 30, [sys.executable, "-c", "print('hello')"])["ok"]
    assert "hello" in log.read_text()
    late = device_check.Runner(log, time.monotonic() + 5, dict())
    rec = late.run("late", 30, [sys.executable, "-c", "pass"])
    assert rec["skipped"] and not rec["ok"] and "budget" in rec["error"]
