"""Two checkouts of this repository, the same bench_speculative.py run, alternated: a change's effect.

    git worktree add --detach /tmp/old <revision>
    python benchmarks/compare_revisions.py --old /tmp/old --new . --rounds 3 -- \
        --backend onnxruntime --build-dir engines/demo --prompts demo-heldout --num-prompts 20

Each round runs the old checkout's benchmarks/bench_speculative.py, then the new one's, with the
same arguments, each in its own process (with this interpreter: both import their own
`griffin_trt`); alternating spreads a shared machine's drift over both. Prints, per checkout, the
median over rounds of plain and GRIFFIN tokens/s, their ratio, tau and identical outputs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = ("plain_tok_s", "griffin_tok_s", "speedup", "acceptance_length")


def run_once(checkout: Path, bench_args: list[str], out: Path) -> dict:
    cmd = [sys.executable, str(checkout / "benchmarks" / "bench_speculative.py"), *bench_args, "--json", str(out)]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
    if not out.is_file():
        raise SystemExit(f"{checkout}: bench_speculative failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())["summary"]["all"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True)
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: bench_speculative.py's arguments")
    args = ap.parse_args(argv)
    bench_args = [a for a in args.bench_args if a != "--"]
    # Paths in the arguments mean the same file for both checkouts.
    bench_args = [str(Path(a).resolve()) if Path(a).exists() else a for a in bench_args]
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in ("old", "new"):
                s = run_once(getattr(args, name).resolve(), bench_args, Path(tmp) / f"{name}{r}.json")
                runs[name].append(s)
                print(f"round {r + 1} {name}: plain {s['plain_tok_s']:.1f} tok/s, GRIFFIN {s['griffin_tok_s']:.1f}, "
                      f"ratio {s['speedup']:.2f}, tau {s['acceptance_length']:.2f}, same {s['identical']}/{s['prompts']}",
                      flush=True)
    med = {name: {f: statistics.median(s[f] for s in rs) for f in FIGURES} for name, rs in runs.items()}
    print(f"\nmedians of {args.rounds} rounds: {' '.join(bench_args)}")
    print(f"{'checkout':<10}{'plain tok/s':>13}{'GRIFFIN tok/s':>15}{'ratio':>8}{'tau':>7}{'same':>10}")
    for name, m in med.items():
        same = f"{sum(s['identical'] for s in runs[name])}/{sum(s['prompts'] for s in runs[name])}"
        print(f"{name:<10}{m['plain_tok_s']:>13.1f}{m['griffin_tok_s']:>15.1f}{m['speedup']:>8.2f}"
              f"{m['acceptance_length']:>7.2f}{same:>10}")
    if args.json:
        args.json.write_text(json.dumps({"args": bench_args, "runs": runs, "medians": med}, indent=1))
    return 0 if all(s["identical"] == s["prompts"] for rs in runs.values() for s in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
