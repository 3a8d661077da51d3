"""The benchmark's prompt set, statistics and report, without a server."""
import json

from griffin_trt.client.bench import (CATEGORIES, aggregate, by_category, compare, format_report, load_prompts,
                                      lossless_check, percentile, plot_report)


def test_prompt_set():
    rows = load_prompts()
    assert len(rows) >= 40
    assert len({r["id"] for r in rows}) == len(rows)
    for cat in CATEGORIES:
        assert sum(r["category"] == cat for r in rows) >= 10, cat
    assert {r["category"] for r in load_prompts(num=4)} == set(CATEGORIES)
    many = load_prompts(num=len(rows) + 5)
    assert len(many) == len(rows) + 5 and len({r["id"] for r in many}) == len(many)


def test_percentile_matches_numpy():
    import numpy as np

    xs = [0.3, 1.0, 0.1, 7.0, 2.5, 2.5]
    for q in (0, 50, 90, 99, 100):
        assert abs(percentile(xs, q) - float(np.percentile(xs, q))) < 1e-12
    assert percentile([], 50) is None


def _row(i, mode, cat, toks, e2e, tau, fwd, ok=True):
    return {"id": f"p{i}", "category": cat, "mode": mode, "concurrency": 1, "ok": ok, "error": "", "num_tokens": len(toks),
            "num_responses": 2, "token_ids": toks, "ttft_s": 0.01, "tpot_s": e2e / max(len(toks) - 1, 1), "e2e_s": e2e,
            "tokens_per_s": len(toks) / e2e if e2e else None, "acceptance_length": tau, "acceptance_rate": 0.5, "target_forwards": fwd,
            "total_accepted_draft_tokens": 3, "total_draft_tokens": 6, "server_ttft_s": 0.005}


def test_aggregate_compare_report(tmp_path):
    spec = [_row(0, "speculative", "chat", [1, 2, 3, 4], 0.2, 3.0, 1), _row(1, "speculative", "code", [5, 6], 0.1, 1.0, 1),
            _row(2, "speculative", "math", [], 0.0, 0.0, 0, ok=False)]
    plain = [_row(0, "plain", "chat", [1, 2, 3, 4], 0.4, 1.0, 3), _row(1, "plain", "code", [5, 7], 0.2, 1.0, 1)]
    a, b = aggregate(spec, 1.0), aggregate(plain, 2.0)
    assert a["failures"] == 1 and a["tokens"] == 6 and a["throughput_tokens_per_s"] == 6.0
    assert a["acceptance_length_weighted"] == 2.0  # (3*1 + 1*1) / 2 forwards
    assert b["throughput_tokens_per_s"] == 3.0
    c = compare(a, b)
    assert c["throughput_ratio"] == 2.0 and abs(c["speedup_e2e_mean"] - 2.0) < 1e-9
    ll = lossless_check(spec, plain)
    assert ll["compared"] == 2 and ll["mismatched_ids"] == ["p1"]
    report = {"config": {}, "runs": [{"concurrency": 1, "speculative_vs_plain": c, "lossless": ll, "modes": {
        "speculative": {"aggregate": a, "by_category": by_category(spec), "requests": spec},
        "plain": {"aggregate": b, "by_category": by_category(plain), "requests": plain}}}]}
    text = format_report(report)
    assert "speculative/plain" in text and "1/2" in text
    json.dumps(report)
    png = plot_report(report, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_compares_ttft_with_concurrency_1():
    def run(c, ttft):
        rows = [dict(_row(i, m, "chat", [1, 2], 0.1, 1.0, 1), ttft_s=ttft, concurrency=c)
                for i, m in enumerate(("speculative", "plain"))]
        modes = {m: {"aggregate": aggregate([r for r in rows if r["mode"] == m], 1.0),
                     "by_category": by_category([r for r in rows if r["mode"] == m]), "requests": rows} for m in
                 ("speculative", "plain")}
        return {"concurrency": c, "modes": modes, "lossless": lossless_check(rows[:1], rows[1:]),
                "speculative_vs_plain": compare(modes["speculative"]["aggregate"], modes["plain"]["aggregate"])}

    text = format_report({"config": {}, "runs": [run(1, 0.02), run(4, 0.05)]})
    assert "TTFT p50 vs concurrency 1: speculative x2.50, plain x2.50" in text
