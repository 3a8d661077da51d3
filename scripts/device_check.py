"""One-call GPU readiness check: install, GPU tests, benchmarks; one JSON + one markdown summary.

    python scripts/device_check.py OUT_DIR [--mode auto|gpu|cpu] [--budget SECONDS]
    make device-check OUT=OUT_DIR

Run from the repository root. On a GPU host (the image we reach: Python 3.12, PyTorch 2.11 CUDA 13,
OpenAI Triton 3.6, numpy 2, transformers 5.17, no internet) it:

1. installs the project into a private folder with `pip install --no-deps --no-index` (plus the
   wheels `make device-wheels` put in `.whl/`, if any), leaving the preinstalled torch untouched
   (checked), and records the versions it runs with;
2. runs the GPU-marked tests: the draft-tree kernels against the torch reference on CUDA, the
   CUDA-graph loop token-exact against transformers' greedy output at batch 1 and 4, the reduced
   draft vocabulary on CUDA;
3. runs benchmarks/bench_speculative.py on CUDA with the demo pair (full vocabulary and reduced
   draft vocabularies), benchmarks/bench_tree_kernel.py (with --check), and
   benchmarks/bench_cycle.py at the LLaMA-3-8B and Vicuna-7B shapes;
4. writes OUT_DIR/device_check.json, OUT_DIR/device_check.md and OUT_DIR/device_check.log.

Every step runs in its own process group with its own time limit, inside one overall budget (default
520 s on a GPU: the device's commands are cut at 10 minutes), so a hang costs one step, not the call.
On a machine without a GPU (`--mode cpu`, what CI runs) the same steps run at small shapes in about
a minute; the GPU tests then skip with their reason. Exit status 0 when every step passed and every
expected figure is in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl"
GPU_TEST_FILES = ("tests/test_tree_kernels.py", "tests/test_runtime.py", "tests/test_draft_vocab.py")
DEMO_DRAFT_VOCABS = (512, 1024)  # the demo pair's vocabulary is 2048: a half and a quarter of it
MODULES = (  # (import name, distribution, needed by this check; triton is needed in gpu mode)
    ("torch", "torch", True), ("transformers", "transformers", True), ("safetensors", "safetensors", True),
    ("tokenizers", "tokenizers", True), ("numpy", "numpy", True), ("tqdm", "tqdm", True), ("pytest", "pytest", True),
    ("triton", "triton", False), ("onnx", "onnx", False), ("onnxscript", "onnxscript", False),
    ("onnxruntime", "onnxruntime", False), ("pytest_timeout", "pytest-timeout", False),
    ("tritonclient.grpc", "tritonclient", False),
)

# Per mode: (step name, time cap in s, argv after `python`), most important first (a step that no
# longer fits the budget is skipped and reported). {tmp} is the scratch folder.
def plan(mode: str) -> list[tuple[str, int, list[str]]]:
    gpu = mode == "gpu"
    dev = "cuda" if gpu else "cpu"
    spec = ["benchmarks/bench_speculative.py", "--device", dev, "--backend", "torch"]
    # GPU: GRIFFIN's default tree (the demo recipe's chain is what a CPU wants)
    spec += ["--num-prompts", "20", "--max-new-tokens", "128", "--tree", "10,5,60"] if gpu else ["--num-prompts", "2", "--max-new-tokens", "24", "--warmup", "1", "--threads", "1"]
    cycle = ["benchmarks/bench_cycle.py", "--device", dev]

    def cycle_step(shape: str, cap: int, *extra: str):
        return (f"cycle_{shape}", cap, [*cycle, "--shape", shape, *extra, "--json", f"{{tmp}}/cycle_{shape}.json"])

    steps = [
        ("gpu_tests", 240 if gpu else 120,
         ["-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider", "--junitxml", "{tmp}/gpu_tests.xml",
          *GPU_TEST_FILES]),
    ]
    if gpu:
        steps.append(cycle_step("llama3-8b", 240))
    steps.append(("speculative_full", 120, [*spec, "--json", "{tmp}/speculative_full.json"]))
    steps.append(("tree_kernels", 90, ["benchmarks/bench_tree_kernel.py", "--device", dev, "--json", "{tmp}/tree_kernels.json",
                                       *(["--check", "--iters", "200"] if gpu else ["--iters", "10"])]))
    steps += [
        (f"speculative_vocab{n}", 90, [*spec, "--draft-vocab", str(n), "--json", f"{{tmp}}/speculative_vocab{n}.json"])
        for n in DEMO_DRAFT_VOCABS
    ]
    steps.append(cycle_step("vicuna-7b", 240) if gpu else cycle_step("small", 150, "--reps", "3", "--loop-tokens", "10"))
    return steps


class Runner:
    """Runs steps as child process groups with time limits inside one deadline; logs everything."""

    def __init__(self, log: Path, deadline: float, env: dict):
        self.log = log
        self.deadline = deadline
        self.env = env
        self.steps: dict[str, dict] = {}

    def run(self, name: str, cap: int, argv: list[str], cwd: Path = REPO) -> dict:
        left = self.deadline - time.monotonic()
        limit = min(cap, left)
        rec = {"command": " ".join(argv), "limit_s": round(limit, 1)}
        self.steps[name] = rec
        if left < 10:
            rec.update(ok=False, skipped=True, error=f"skipped: {left:.0f} s of the budget left")
            print(f"[device-check] {name}: SKIPPED ({rec['error']})", flush=True)
            return rec
        print(f"[device-check] {name}: running (limit {limit:.0f} s)", flush=True)
        t0 = time.monotonic()
        with open(self.log, "a") as log:
            log.write(f"\n===== {name}: {rec['command']}\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                rc = proc.wait()
        rec.update(rc=rc, seconds=round(time.monotonic() - t0, 1), timed_out=timed_out, ok=rc == 0 and not timed_out)
        if not rec["ok"]:
            rec["error"] = f"timed out after {limit:.0f} s" if timed_out else f"exit status {rc}"
            rec["log_tail"] = _tail(self.log, 40)
        print(f"[device-check] {name}: {'ok' if rec['ok'] else 'FAILED: ' + rec['error']} ({rec['seconds']} s)", flush=True)
        return rec


def _kill_group(proc: subprocess.Popen) -> None:
    """End the step's own process group (and only it): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, n: int) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------------------- install


PROBE = r"""
import importlib, importlib.metadata as md, json, sys
out = {"python": sys.version.split()[0], "executable": sys.executable, "modules": {}}
for item in sys.argv[1].split(","):
    name, dist = item.split(":")
    try:
        m = importlib.import_module(name)
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = getattr(m, "__version__", "?")
        out["modules"][name] = {"version": version, "file": getattr(m, "__file__", None)}
    except Exception as e:
        out["modules"][name] = {"version": None, "error": f"{type(e).__name__}: {e}"}
import torch
out["cuda_available"] = torch.cuda.is_available()
out["torch_cuda"] = torch.version.cuda
if out["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    out["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                  "multiprocessors": p.multi_processor_count, "count": torch.cuda.device_count()}
print("PROBE_JSON " + json.dumps(out))
"""


def probe(env: dict) -> dict:
    names = ",".join(f"{m}:{d}" for m, d, _ in MODULES)
    proc = subprocess.run([sys.executable, "-c", PROBE, names], env=env, capture_output=True, text=True, timeout=180,
                          cwd=tempfile.gettempdir())  # not the checkout: see what is installed
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE_JSON ")), None)
    if line is None:
        raise RuntimeError(f"environment probe failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(line[len("PROBE_JSON "):])


def _wheels_for_this_python() -> tuple[list[str], list[str]]:
    """The .whl/ wheels this interpreter can install (they are made for the GPU host's CPython 3.12;
    a CPU run elsewhere skips the others rather than failing on them)."""
    found = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:
        return [str(w) for w in found], []
    ours = set(sys_tags())
    ok = [w for w in found if parse_wheel_filename(w.name)[3] & ours]
    return [str(w) for w in ok], [w.name for w in found if w not in ok]


def install(runner: Runner, site: Path, scratch: Path) -> dict:
    """pip --no-deps --no-index into `site`: the .whl/ wheels, then the project (from a copy, so
    setuptools' in-tree build/ never lands in our recipes folder)."""
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--target", str(site)]
    wheels, foreign = _wheels_for_this_python()
    info = {"site": str(site), "wheels": [Path(w).name for w in wheels], "wheels_not_for_this_python": foreign}
    if wheels:
        if not runner.run("install_wheels", 120, [*pip, "--upgrade", *wheels])["ok"]:
            return info
    src = scratch / "src"
    shutil.copytree(REPO / "griffin_trt", src / "griffin_trt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, src / f)
    runner.run("install_project", 180, [*pip, "--no-build-isolation", str(src)])
    return info


# ------------------------------------------------------------------------------------- results


def junit_summary(path: Path) -> dict | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    cases = list(root.iter("testcase"))
    out = {"collected": len(cases), "passed": 0, "failed": 0, "skipped": 0, "failures": [], "skip_reasons": []}
    for c in cases:
        name = f"{c.get('classname', '')}::{c.get('name', '')}"
        bad = c.find("failure") if c.find("failure") is not None else c.find("error")
        skip = c.find("skipped")
        if bad is not None:
            out["failed"] += 1
            out["failures"].append(f"{name}: {(bad.get('message') or '')[:300]}")
        elif skip is not None:
            out["skipped"] += 1
            reason = skip.get("message") or ""
            if reason not in out["skip_reasons"]:
                out["skip_reasons"].append(reason)
        else:
            out["passed"] += 1
    return out


def speculative_summary(data: dict | None) -> dict | None:
    if not data:
        return None
    s = dict(data["summary"]["all"])
    s["env"] = data["env"]
    return s


def missing_figures(res: dict, mode: str) -> list[str]:
    """Every figure the issue names, at this mode's shapes; a missing one fails the check."""
    miss = []

    def need(obj, *path):
        cur = obj
        for p in path:
            if not isinstance(cur, dict) or cur.get(p) is None:
                miss.append(".".join(str(x) for x in path))
                return
            cur = cur[p]

    need(res, "gpu_tests", "collected")
    for key in ("full", *(f"vocab{n}" for n in DEMO_DRAFT_VOCABS)):
        for fig in ("acceptance_length", "draft_pass_ms", "griffin_tok_s", "plain_tok_s", "identical"):
            need(res, "speculative", key, fig)
    rows = (res.get("tree_kernels") or {}).get("rows", [])
    ops = {(r["batch"], r["op"]) for r in rows if r.get("ref_ms") is not None and (mode == "cpu" or r.get("kernel_ms"))}
    for b in (1, 4, 8):
        for op in ("expand", "finalize", "accept"):
            if (b, op) not in ops:
                miss.append(f"tree_kernels.batch{b}.{op}")
    shapes = ("llama3-8b", "vicuna-7b") if mode == "gpu" else ("small",)
    need(res, "cycle", "copy_bandwidth_gbs")
    for shape in shapes:
        need(res, "cycle", "shapes", shape, "bound_weights_ms")
        vocabs = (res.get("cycle") or {}).get("shapes", {}).get(shape, {}).get("config", {}).get("draft_vocabs", [])
        if shape != "vicuna-7b" and not vocabs:
            miss.append(f"cycle.shapes.{shape}.config.draft_vocabs")
        for b in ("1", "4", "8"):
            base = ("cycle", "shapes", shape, "batches", b)
            for fig in ("plain_ms", "draft_pass_ms", "draft_update_ms", "bound_weights_kv_ms"):
                need(res, *base, fig)
            for t in ("1", "16", "32", "60"):
                need(res, *base, "verify_ms", t)
            for op in ("expand", "select", "accept", "kv_move"):
                need(res, *base, "tree_ms", op)
            for part in ("draft", "verify", "tree", "total"):
                need(res, *base, "cycle_ms", part)
            for part in ("draft_passes_ms", "tree_ops_ms", "host_ms", "overhead_vs_verify"):
                need(res, *base, "breakdown", part)
            for tau in ("3.0", "4.0", "4.5"):
                need(res, *base, "projected_speedup", tau)
                need(res, *base, "loop", "projected_speedup", tau)
            for n in vocabs:
                need(res, *base, "draft_pass_reduced_ms", str(n))
    return miss


def to_markdown(res: dict, cycle_md: list[str]) -> str:
    env = res["environment"]
    gpu = env.get("gpu") or {}
    mods = env.get("modules", {})
    ver = ", ".join(f"{d} {mods[m]['version'] or 'missing'}" for m, d, _ in MODULES if m in mods)
    lines = [
        f"# Device check ({res['mode']} mode): {'PASSED' if res['ok'] else 'FAILED'}",
        "",
        f"{res['finished']}; device: {gpu.get('name', 'no GPU')}"
        + (f" (compute {gpu['capability']}, {gpu['memory_gib']} GiB)" if gpu else "")
        + f"; Python {env.get('python')}; {ver}. Wall time {res['wall_s']:.0f} s of a {res['budget_s']} s budget.",
        "",
        f"Command: `{res['command']}`",
        "",
        "| step | result | seconds |",
        "|---|---|---|",
    ]
    for name, s in res["steps"].items():
        lines.append(f"| {name} | {'ok' if s.get('ok') else s.get('error', 'failed')} | {s.get('seconds', '-')} |")
    if res["missing_figures"]:
        lines += ["", f"Missing figures: {', '.join(res['missing_figures'])}"]
    g = res.get("gpu_tests") or {}
    lines += ["", "## GPU tests", "",
              f"{g.get('passed', 0)} passed, {g.get('failed', 0)} failed, {g.get('skipped', 0)} skipped "
              f"of {g.get('collected', 0)} ({', '.join(GPU_TEST_FILES)}, `-m gpu`)."]
    lines += [f"- FAILED {f}" for f in g.get("failures", [])]
    lines += [f"- skipped: {r}" for r in g.get("skip_reasons", [])]
    sp = {k: s for k, s in (res.get("speculative") or {}).items() if s}
    if sp:
        lines += ["", "## Demo pair in-process (benchmarks/bench_speculative.py)", "",
                  "| draft vocabulary | plain tok/s | GRIFFIN tok/s | ratio | tau | drafter pass ms | same |",
                  "|---|---|---|---|---|---|---|"]
        for key, s in sp.items():
            label = "full (2048)" if key == "full" else key.removeprefix("vocab")
            lines.append(f"| {label} | {s['plain_tok_s']:.1f} | {s['griffin_tok_s']:.1f} | {s['speedup']:.2f} | "
                         f"{s['acceptance_length']:.2f} | {s['draft_pass_ms']:.3f} | {s['identical']}/{s['prompts']} |")
        first = next(iter(sp.values()))
        env0 = first["env"]
        lines += ["", f"Prompts: {first['prompts']} demo held-out windows of Python {env0.get('python')}'s "
                  f"stdlib (sha256 {env0.get('prompts_sha256')}), {env0.get('max_new_tokens')} new tokens, greedy."]
    tk = res.get("tree_kernels") or {}
    if tk.get("rows"):
        lines += ["", "## Draft-tree ops (benchmarks/bench_tree_kernel.py)", "",
                  "| B | k | depth | total | op | torch ms | kernel ms | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for r in tk["rows"]:
            ker = f"{r['kernel_ms']:.4f} | {r['speedup']:.1f}x" if r.get("kernel_ms") else "- | -"
            lines.append(f"| {r['batch']} | {r['top_k']} | {r['depth']} | {r['total_tokens']} | {r['op']} | "
                         f"{r['ref_ms']:.4f} | {ker} |")
    if cycle_md:
        lines += ["", "## One GRIFFIN cycle at model shapes (benchmarks/bench_cycle.py)", "", *cycle_md]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for device_check.json / .md / .log")
    ap.add_argument("--mode", choices=("auto", "gpu", "cpu"), default="auto", help="auto: gpu where torch sees CUDA")
    ap.add_argument("--budget", type=float, default=None, help="overall seconds (default: 520 gpu, 300 cpu)")
    ap.add_argument("--skip-install", action="store_true", help="use the current environment as it is")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "device_check.log"
    log.write_text("")
    scratch = Path(tempfile.mkdtemp(prefix="device-check-"))
    site = scratch / "site"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("TRITON_INTERPRET", None)  # kernels must compile for the GPU, not run interpreted
    cycle_md: list[str] = []
    res: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    try:
        before = probe(env)
        mode = args.mode if args.mode != "auto" else ("gpu" if before["cuda_available"] else "cpu")
        if mode == "gpu" and not before["cuda_available"]:
            ap.error("--mode gpu: torch sees no CUDA GPU here")
        budget = args.budget or (520.0 if mode == "gpu" else 300.0)
        res.update(mode=mode, budget_s=budget)
        runner = Runner(log, t_start + budget, env)
        res["steps"] = runner.steps  # filled as the steps run
        if not args.skip_install:
            res["install"] = install(runner, site, scratch)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        after = probe(env)
        res["environment"] = after
        torch_before, torch_after = before["modules"]["torch"], after["modules"]["torch"]
        res["torch_untouched"] = torch_before == torch_after
        missing = [m for m, _, needed in MODULES if needed and after["modules"][m]["version"] is None]
        if mode == "gpu":
            missing += [m for m in ("triton",) if after["modules"][m]["version"] is None]
        if not res["torch_untouched"]:
            raise RuntimeError(f"the install changed torch: {torch_before} -> {torch_after}")
        if missing:
            raise RuntimeError(f"missing Python packages {missing}: run `make device-wheels` where pip works and carry .whl/")
        if not args.skip_install:
            runner.run("cli_help", 60, [sys.executable, "-m", "griffin_trt.cli", "--help"], cwd=scratch)  # the installed copy

        tmp = scratch / "results"
        tmp.mkdir()
        for name, cap, argv_tail in plan(mode):
            argv_tail = [a.replace("{tmp}", str(tmp)) for a in argv_tail]
            if name == "gpu_tests" and after["modules"]["pytest_timeout"]["version"] is not None:
                argv_tail[2:2] = ["--timeout", "150"]
            runner.run(name, cap, [sys.executable, *argv_tail])

        res["gpu_tests"] = junit_summary(tmp / "gpu_tests.xml")
        res["speculative"] = {"full": speculative_summary(_read_json(tmp / "speculative_full.json"))}
        for n in DEMO_DRAFT_VOCABS:
            res["speculative"][f"vocab{n}"] = speculative_summary(_read_json(tmp / f"speculative_vocab{n}.json"))
        res["tree_kernels"] = _read_json(tmp / "tree_kernels.json")
        cycle = None
        for path in sorted(tmp.glob("cycle_*.json")):  # one file per shape (separate steps)
            part = _read_json(path)
            if part is None:
                continue
            if cycle is None:
                cycle = {k: v for k, v in part.items() if k != "shapes"} | {"shapes": {}}
            cycle["shapes"].update(part["shapes"])
        res["cycle"] = cycle
        res["missing_figures"] = missing_figures(res, mode)
        res["ok"] = all(s.get("ok") for s in runner.steps.values()) and not res["missing_figures"] and bool(
            res["gpu_tests"] and res["gpu_tests"]["failed"] == 0 and (mode == "cpu" or res["gpu_tests"]["passed"] > 0))
        if cycle:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from bench_cycle import to_markdown as cycle_markdown

            cycle_md = [cycle_markdown(cycle)]
    except Exception as e:  # noqa: BLE001 - whatever broke is reported in the JSON, not lost
        res.setdefault("mode", args.mode)
        res.setdefault("budget_s", args.budget)
        res.setdefault("environment", {})
        res.setdefault("steps", {})
        res.setdefault("missing_figures", [])
        res.update(ok=False, error=f"{type(e).__name__}: {e}")
        print(f"[device-check] ERROR: {res['error']}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["host"] = platform.node()
    (out / "device_check.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res, cycle_md)
    if res.get("error"):
        md += f"\nERROR: {res['error']}\n"
    (out / "device_check.md").write_text(md)
    print(md)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
