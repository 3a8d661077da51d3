"""`griffin-trt bench`: GRIFFIN speculative decoding vs plain decoding over gRPC, in one run.

Runs the shipped prompt set (chat, code, math, summarisation) through the ensemble at each
concurrency level, once with `speculative=true` and once with `speculative=false`, and reports per
request and in aggregate: acceptance length, TTFT, TPOT, end-to-end latency and tokens/s (mean, p50,
p90, p99), the speculative/plain ratios, and whether greedy outputs of both modes agree token for
token. Starts its own tritonserver on loopback from the recipe's build unless `--url` is given.

Light: tritonclient.grpc + numpy (+ tqdm, matplotlib for --plot); never torch.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from pathlib import Path

from .client import DEFAULT_URL, GriffinClient, RequestResult

PROMPTS = Path(__file__).with_name("prompts.jsonl")
CATEGORIES = ("chat", "code", "math", "summarisation")
MODES = ("speculative", "plain")
METRICS = ("ttft_s", "tpot_s", "e2e_s", "tokens_per_s", "acceptance_length")


def load_prompts(path: str | Path | None = None, num: int | None = None) -> list[dict]:
    """Prompts as dicts (id, category, prompt); with `num`, taken round-robin across categories."""
    path = Path(path) if path else PROMPTS
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        if not {"id", "category", "prompt"} <= set(r):
            raise ValueError(f"{path}: every line needs id, category and prompt; got {sorted(r)}")
    if num is not None and num < 1:
        raise ValueError(f"--num-prompts must be >= 1, got {num}")
    if num is None:
        return rows
    if num >= len(rows):  # cycle; repeats get distinct ids
        return [dict(rows[i % len(rows)], id=f"{rows[i % len(rows)]['id']}#{i // len(rows)}") if i >= len(rows)
                else rows[i] for i in range(num)]
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        by_cat.setdefault(r["category"], []).append(r)
    out, i = [], 0
    while len(out) < num:
        for cat in sorted(by_cat):
            if i < len(by_cat[cat]) and len(out) < num:
                out.append(by_cat[cat][i])
        i += 1
    return out


def percentile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def describe(xs: list[float | None]) -> dict:
    vals = [x for x in xs if x is not None]
    if not vals:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    return {
        "n": len(vals),
        "mean": sum(vals) / len(vals),
        "p50": percentile(vals, 50),
        "p90": percentile(vals, 90),
        "p99": percentile(vals, 99),
    }


def request_row(p: dict, mode: str, concurrency: int, r: RequestResult) -> dict:
    server_ttft = (r.first_token_time_ns - r.arrival_time_ns) / 1e9 if r.arrival_time_ns and r.first_token_time_ns else None
    return {
        "id": p["id"],
        "category": p["category"],
        "mode": mode,
        "concurrency": concurrency,
        "ok": r.ok,
        "error": r.error,
        "num_tokens": r.num_tokens,
        "num_responses": r.num_responses,
        "token_ids": r.token_ids,
        "ttft_s": r.ttft_s,
        "tpot_s": r.tpot_s,
        "e2e_s": r.e2e_s if r.ok else None,
        "tokens_per_s": (r.num_tokens / r.e2e_s) if r.ok and r.e2e_s > 0 else None,
        "acceptance_length": r.acceptance_length if r.ok else None,
        "acceptance_rate": r.acceptance_rate if r.ok else None,
        "target_forwards": r.target_forwards,
        "total_accepted_draft_tokens": r.total_accepted_draft_tokens,
        "total_draft_tokens": r.total_draft_tokens,
        "server_ttft_s": server_ttft,
    }


def run_load(url: str, prompts: list[dict], mode: str, concurrency: int, max_tokens: int, stream: bool,
             progress=None, timeout_s: float = 600.0) -> tuple[list[dict], float]:
    """Send every prompt once with `concurrency` workers (one gRPC stream each); rows + wall seconds."""
    lock = threading.Lock()
    todo = list(enumerate(prompts))
    rows: list[dict | None] = [None] * len(prompts)

    def worker():
        with GriffinClient(url, timeout_s=timeout_s) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    i, p = todo.pop(0)
                r = c.generate(p["prompt"], max_tokens=max_tokens, stream=stream,
                               speculative=(mode == "speculative"), raise_on_error=False)
                rows[i] = request_row(p, mode, concurrency, r)
                if progress is not None:
                    with lock:
                        progress.update(1)
                        progress.set_postfix_str(f"{mode} c={concurrency}", refresh=False)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(concurrency, len(prompts))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in rows if r is not None], time.perf_counter() - t0


def aggregate(rows: list[dict], wall_s: float) -> dict:
    ok = [r for r in rows if r["ok"]]
    tokens = sum(r["num_tokens"] for r in ok)
    fwd = sum(r["target_forwards"] for r in ok)
    agg = {
        "requests": len(rows),
        "failures": len(rows) - len(ok),
        "tokens": tokens,
        "wall_s": wall_s,
        "throughput_tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        # token-weighted: decode tokens over decode steps (the prefill token is not a decode step)
        "acceptance_length_weighted": (
            sum(r["acceptance_length"] * r["target_forwards"] for r in ok) / fwd if fwd else None
        ),
        "total_accepted_draft_tokens": sum(r["total_accepted_draft_tokens"] for r in ok),
        "total_draft_tokens": sum(r["total_draft_tokens"] for r in ok),
    }
    for m in METRICS + ("server_ttft_s",):
        agg[m] = describe([r[m] for r in ok])
    return agg


def by_category(rows: list[dict]) -> dict:
    out = {}
    for cat in sorted({r["category"] for r in rows}):
        sub = [r for r in rows if r["category"] == cat and r["ok"]]
        out[cat] = {m: describe([r[m] for r in sub])["mean"] for m in METRICS}
        out[cat]["requests"] = len(sub)
    return out


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def compare(spec: dict, plain: dict) -> dict:
    """Speculative over plain; `speedup_*` > 1 means GRIFFIN is faster."""
    return {
        "throughput_ratio": _ratio(spec["throughput_tokens_per_s"], plain["throughput_tokens_per_s"]),
        "speedup_e2e_mean": _ratio(plain["e2e_s"]["mean"], spec["e2e_s"]["mean"]),
        "speedup_tpot_mean": _ratio(plain["tpot_s"]["mean"], spec["tpot_s"]["mean"]),
        "ttft_ratio_mean": _ratio(spec["ttft_s"]["mean"], plain["ttft_s"]["mean"]),
    }


def lossless_check(spec_rows: list[dict], plain_rows: list[dict]) -> dict:
    plain = {r["id"]: r["token_ids"] for r in plain_rows if r["ok"]}
    both = [r for r in spec_rows if r["ok"] and r["id"] in plain]
    bad = [r["id"] for r in both if r["token_ids"] != plain[r["id"]]]
    return {"compared": len(both), "mismatches": len(bad), "mismatched_ids": bad}


def run_bench(url: str, prompts: list[dict], concurrencies: list[int], max_tokens: int, stream: bool,
              show_progress: bool = True, warmup: bool = True, timeout_s: float = 600.0) -> dict:
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    if warmup:
        with GriffinClient(url, timeout_s=timeout_s) as c:
            for mode in MODES:
                c.generate(prompts[0]["prompt"], max_tokens=min(8, max_tokens), stream=stream,
                           speculative=(mode == "speculative"), raise_on_error=False)
    total = len(prompts) * len(concurrencies) * len(MODES)
    bar = tqdm(total=total, unit="req", desc="bench", disable=not show_progress, file=sys.stderr) if tqdm else None
    report: dict = {
        "config": {"url": url, "num_prompts": len(prompts), "concurrency": concurrencies,
                   "max_tokens": max_tokens, "stream": stream, "temperature": 0.0},
        "runs": [],
    }
    try:
        for c in concurrencies:
            run = {"concurrency": c, "modes": {}}
            rows_by_mode = {}
            for mode in MODES:
                rows, wall = run_load(url, prompts, mode, c, max_tokens, stream, bar, timeout_s)
                rows_by_mode[mode] = rows
                run["modes"][mode] = {"aggregate": aggregate(rows, wall), "by_category": by_category(rows),
                                      "requests": rows}
            run["speculative_vs_plain"] = compare(run["modes"]["speculative"]["aggregate"],
                                                  run["modes"]["plain"]["aggregate"])
            run["lossless"] = lossless_check(rows_by_mode["speculative"], rows_by_mode["plain"])
            report["runs"].append(run)
    finally:
        if bar is not None:
            bar.close()
    return report


def _fmt(v, scale=1.0, digits=2):
    return "-" if v is None else f"{v * scale:.{digits}f}"


def format_report(report: dict) -> str:
    lines = []
    ttft1 = {m: run["modes"][m]["aggregate"]["ttft_s"]["p50"] for run in report["runs"] if run["concurrency"] == 1
             for m in MODES}
    for run in report["runs"]:
        lines.append(f"concurrency {run['concurrency']}:")
        lines.append(f"  {'mode':<12}{'req':>5}{'fail':>5}{'tok':>7}{'tok/s':>9}{'tau':>6}"
                     f"{'TTFT ms p50/p90/p99':>24}{'TPOT ms p50/p90/p99':>24}{'e2e s mean/p50/p99':>22}")
        for mode in MODES:
            a = run["modes"][mode]["aggregate"]
            t, p, e = a["ttft_s"], a["tpot_s"], a["e2e_s"]
            lines.append(
                f"  {mode:<12}{a['requests']:>5}{a['failures']:>5}{a['tokens']:>7}"
                f"{_fmt(a['throughput_tokens_per_s'], 1, 1):>9}{_fmt(a['acceptance_length_weighted']):>6}"
                f"{_fmt(t['p50'], 1e3, 0) + '/' + _fmt(t['p90'], 1e3, 0) + '/' + _fmt(t['p99'], 1e3, 0):>24}"
                f"{_fmt(p['p50'], 1e3, 1) + '/' + _fmt(p['p90'], 1e3, 1) + '/' + _fmt(p['p99'], 1e3, 1):>24}"
                f"{_fmt(e['mean']) + '/' + _fmt(e['p50']) + '/' + _fmt(e['p99']):>22}"
            )
        cmp_ = run["speculative_vs_plain"]
        ll = run["lossless"]
        lines.append(
            f"  speculative/plain: throughput x{_fmt(cmp_['throughput_ratio'])}, e2e speedup x{_fmt(cmp_['speedup_e2e_mean'])}, "
            f"TPOT speedup x{_fmt(cmp_['speedup_tpot_mean'])}; greedy outputs equal in "
            f"{ll['compared'] - ll['mismatches']}/{ll['compared']}"
        )
        if ttft1 and run["concurrency"] != 1:
            lines.append("  TTFT p50 vs concurrency 1: " + ", ".join(
                f"{m} x{_fmt(_ratio(run['modes'][m]['aggregate']['ttft_s']['p50'], ttft1.get(m)))}" for m in MODES))
        cats = run["modes"]["speculative"]["by_category"]
        plain_cats = run["modes"]["plain"]["by_category"]
        for cat, v in cats.items():
            pv = plain_cats.get(cat, {})
            lines.append(f"    {cat:<14} tau {_fmt(v['acceptance_length'])}  e2e {_fmt(v['e2e_s'])} s "
                         f"(plain {_fmt(pv.get('e2e_s'))} s)  TPOT {_fmt(v['tpot_s'], 1e3, 1)} ms "
                         f"(plain {_fmt(pv.get('tpot_s'), 1e3, 1)} ms)")
    return "\n".join(lines)


def plot_report(report: dict, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = report["runs"][0]
    cats = sorted(set(run["modes"]["speculative"]["by_category"]) | set(run["modes"]["plain"]["by_category"]))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    x = list(range(len(cats)))
    w = 0.38

    def bars(ax, metric, scale, title, ylabel, modes=MODES):
        for k, mode in enumerate(modes):
            bc = run["modes"][mode]["by_category"]
            vals = [(bc.get(c, {}).get(metric) or 0.0) * scale for c in cats]
            ax.bar([i + (k - (len(modes) - 1) / 2) * w for i in x], vals, w, label=mode)
        ax.set_xticks(x, cats)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend()

    c0 = run["concurrency"]
    bars(axes[0][0], "e2e_s", 1.0, f"end-to-end latency (concurrency {c0})", "s (mean)")
    bars(axes[0][1], "acceptance_length", 1.0, "acceptance length (tokens / target forward)", "tau (mean)")
    bars(axes[1][0], "tpot_s", 1e3, f"time per output token (concurrency {c0})", "ms (mean)")
    ax = axes[1][1]
    conc = [r["concurrency"] for r in report["runs"]]
    for mode in MODES:
        ax.plot(conc, [r["modes"][mode]["aggregate"]["throughput_tokens_per_s"] or 0 for r in report["runs"]],
                marker="o", label=mode)
    ax.set_xticks(conc)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("tokens/s")
    ax.set_title("throughput")
    ax.legend()
    fig.suptitle("GRIFFIN speculative vs plain decoding")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------- CLI: griffin-trt bench


def _concurrency(s: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--concurrency takes integers like 1,4; got {s!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"--concurrency values must be >= 1; got {s!r}")
    return vals


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="benchmark GRIFFIN vs plain decoding over gRPC (starts a server unless --url is given)",
    )
    p.add_argument("--recipe", default=str(Path(__file__).resolve().parents[2] / "build" / "demo.toml"))
    p.add_argument("--build-dir", default=None, help="build folder (default: the recipe's output_dir)")
    p.add_argument("--url", default=None, help=f"a running server's gRPC address, e.g. {DEFAULT_URL}")
    p.add_argument("--concurrency", type=_concurrency, default=[1, 4, 8], help="comma list (default 1,4,8)")
    p.add_argument("--num-prompts", type=int, default=None, help="prompts per run (default: all shipped)")
    p.add_argument("--prompts", default=None, help="a JSONL prompt file (id, category, prompt)")
    p.add_argument("--max-tokens", type=int, default=64)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--stream", dest="stream", action="store_true", default=True, help="stream responses (default)")
    g.add_argument("--unary", dest="stream", action="store_false", help="one response per request")
    p.add_argument("--json", default=None, help="write the full report here")
    p.add_argument("--plot", default=None, help="write a PNG plot here")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_bench_cli, handler=run_bench_cli)
    return p


def run_bench_cli(args: argparse.Namespace) -> int:
    prompts = load_prompts(args.prompts, args.num_prompts)
    server = None
    url = args.url
    if url is None:
        from ..recipe import load_recipe
        from ..serving.server import ServerError, TritonServer, repository_for

        recipe = load_recipe(args.recipe)
        try:
            repo = repository_for(recipe, args.build_dir)
            print(f"starting tritonserver on {repo} ...", file=sys.stderr, flush=True)
            server = TritonServer(repo).start()
        except ServerError as e:
            print(f"griffin-trt bench: error: {e}", file=sys.stderr)
            return 1
        url = server.grpc_url
    try:
        report = run_bench(url, prompts, args.concurrency, args.max_tokens, args.stream,
                           show_progress=not args.no_progress, timeout_s=args.timeout)
    finally:
        if server is not None:
            server.stop()
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        print(f"wrote {plot_report(report, args.plot)}", file=sys.stderr)
    failures = sum(run["modes"][m]["aggregate"]["failures"] for run in report["runs"] for m in MODES)
    return 1 if failures else 0
