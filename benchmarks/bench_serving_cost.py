"""What serving costs per token: streamed TPOT over gRPC against the same scheduler in-process.

One run, one build, one prompt set. In-process, the runtime's step-level scheduler decodes the prompts
with `--concurrency` requests in flight (the loop the `griffin` model runs, without Triton). Over gRPC,
a real tritonserver per template set (`--templates LABEL=DIR`, default: the checked-in `triton_repo/`)
serves the same build (and `--server LABEL=HOST:PORT` names one already running, e.g. another
checkout's `griffin-trt serve` of the same build, to compare before and after a change), and `GriffinClient`s stream the same prompts at the same concurrency to each
`--models` entry (`ensemble`: text in and out; `griffin`: token ids). Every server is started before
the first measurement and stays up, idle, while the others are measured; rounds are interleaved and
repeated, so a busy machine slows every configuration alike. TPOT = (last chunk - first chunk) /
(tokens - 1), per request, by the client's clock over gRPC and by the scheduler's in-process; the
figure is the median over requests, then the median over `--repeats` rounds.

    python benchmarks/bench_serving_cost.py [--recipe build/demo.toml] [--concurrency 1,8]
        [--models ensemble,griffin] [--templates LABEL=DIR ...] [--server LABEL=HOST:PORT ...]
        [--num-prompts 16] [--max-tokens 64] [--repeats 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from griffin_trt.client.bench import load_prompts  # noqa: E402
from griffin_trt.client.client import GriffinClient  # noqa: E402
from griffin_trt.recipe import load_recipe  # noqa: E402
from griffin_trt.runtime import Request, load_runtime  # noqa: E402
from griffin_trt.serving.repository import fill_repository, templates_dir  # noqa: E402
from griffin_trt.serving.server import TritonServer  # noqa: E402


def inprocess_tpots(runtime, prompts: list[list[int]], concurrency: int, max_tokens: int) -> list[float]:
    """Per-request TPOT (s) with `concurrency` requests in flight in the scheduler, no Triton."""
    sched = runtime.decoder.scheduler
    todo, done = list(prompts), []

    def submit_next(_finished=None):
        if _finished is not None:
            done.append(_finished)
        if todo:
            sched.submit(Request(prompt=todo.pop(0), max_new_tokens=max_tokens, on_finish=submit_next))

    for _ in range(min(concurrency, len(todo))):
        submit_next()
    while len(done) < len(prompts):
        sched.step()
    return [r.result.tpot_s for r in done if len(r.result.token_ids) > 1]


def grpc_tpots(url: str, model: str, prompts: list[str], ids: list[list[int]], concurrency: int,
               max_tokens: int) -> list[float]:
    """Per-request client-side streamed TPOT (s) at `concurrency` streams, one client per worker."""
    work: queue.Queue = queue.Queue()
    for i in range(len(prompts)):
        work.put(i)
    out, errors, lock = [], [], threading.Lock()

    def worker():
        with GriffinClient(url, model=model, timeout_s=300) as c:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                if model == "griffin":
                    r = c.generate(input_ids=ids[i], max_tokens=max_tokens, raise_on_error=False)
                else:
                    r = c.generate(prompts[i], max_tokens=max_tokens, raise_on_error=False)
                with lock:
                    if not r.ok:
                        errors.append(r.error)
                    elif r.tpot_s is not None:
                        out.append(r.tpot_s)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{model}: {len(errors)} request(s) failed, first: {errors[0]}")
    return out


def serve(recipe, build_dir: Path, label: str, templates: Path, work: Path) -> TritonServer:
    """A tritonserver on `templates` filled for the build (a folder of links to its files)."""
    out = work / label
    out.mkdir()
    for f in build_dir.iterdir():
        if f.name != "triton_repo" and not f.name.startswith("."):
            (out / f.name).symlink_to(f.resolve())
    repo = fill_repository(recipe, out, templates=templates)
    return TritonServer(repo, log_path=work / f"{label}.log").start(timeout=300)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "build" / "demo.toml")
    ap.add_argument("--build-dir", type=Path, default=None, help="default: the recipe's output_dir")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--models", default="ensemble,griffin")
    ap.add_argument("--templates", action="append", default=[], metavar="LABEL=DIR",
                    help="a template set to serve (repeatable; default: this checkout's triton_repo/)")
    ap.add_argument("--server", action="append", default=[], metavar="LABEL=HOST:PORT",
                    help="a running server's gRPC address to measure too (repeatable)")
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    recipe = load_recipe(args.recipe)
    build_dir = (args.build_dir or Path(recipe.output_dir)).resolve()
    conc = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")
    sets = [t.split("=", 1) for t in args.templates] or [["this", str(templates_dir())]]
    running = dict(s.split("=", 1) for s in args.server)
    runtime = load_runtime(recipe, build_dir=build_dir)
    texts = [p["prompt"] for p in load_prompts(num=args.num_prompts)]
    ids = [runtime.encode(t)[: recipe.limits.max_input_len] for t in texts]
    inprocess_tpots(runtime, ids[:2], 1, 8)  # warm-up

    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="serving-cost-") as tmp:
        servers = {label: serve(recipe, build_dir, label, Path(d), Path(tmp)) for label, d in sets}
        urls = {**running, **{label: s.grpc_url for label, s in servers.items()}}
        try:
            for url in urls.values():  # warm-up
                for m in models:
                    grpc_tpots(url, m, texts[:2], ids[:2], 1, 8)
            for rnd in range(args.repeats):
                for c in conc:
                    key = f"in-process c={c}"
                    samples.setdefault(key, []).append(statistics.median(
                        inprocess_tpots(runtime, ids, c, args.max_tokens)))
                    for label, url in urls.items():
                        for m in models:
                            key = f"{label} {m} c={c}"
                            samples.setdefault(key, []).append(statistics.median(
                                grpc_tpots(url, m, texts, ids, c, args.max_tokens)))
                print(f"round {rnd + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        finally:
            for s in servers.values():
                s.stop()

    rows = []
    for c in conc:
        base = statistics.median(samples[f"in-process c={c}"])
        for key, vals in samples.items():
            if key.endswith(f"c={c}"):
                med = statistics.median(vals)
                rows.append({"config": key, "tpot_ms": 1e3 * med, "rounds_ms": [1e3 * v for v in vals],
                             "over_in_process_ms": 1e3 * (med - base), "ratio": med / base})
    print(f"{'configuration':32s} {'TPOT ms':>8s} {'+ms/token':>10s} {'x in-process':>13s}  rounds (ms)")
    for r in rows:
        rounds = ", ".join(f"{v:.2f}" for v in r["rounds_ms"])
        print(f"{r['config']:32s} {r['tpot_ms']:8.2f} {r['over_in_process_ms']:10.2f} {r['ratio']:13.2f}  {rounds}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "args": vars(args) | {"recipe": str(args.recipe)},
                                         "threads": os.cpu_count()}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
