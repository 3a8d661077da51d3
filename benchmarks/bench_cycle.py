"""The cost of one GRIFFIN cycle at real model shapes, and the speed-up it projects.

    python benchmarks/bench_cycle.py [--shape llama3-8b --shape vicuna-7b | --shape small | --shape demo]
        [--batches 1,4,8] [--reps 20] [--device auto|cpu|cuda] [--json out.json] [--markdown out.md]

Shapes: llama3-8b and vicuna-7b (CUDA; the default there), small (CPU; the default there, what CI
runs through the device check) and demo (the demo pair's shapes).

Random weights (speed does not depend on their values) at named shapes, built directly on the
device with the project's own model code: a transformers LLaMA config -> `TargetModel`, a
`GriffinDrafter` + `DraftStep` with the target's LM head, both behind the `TorchExecutor` we serve
with (bf16 and CUDA graphs on CUDA). Per batch it times (median of repeated runs after warm-up,
CUDA events on CUDA):

- `plain_ms`: one-token target step (plain decoding);
- `verify_ms[T]`: the target over T tree tokens, T in {1, 16, 32, total_tokens};
- `draft_pass_ms`: one drafter pass over the k-node frontier, LM head and top-k included, and
  `draft_pass_reduced_ms[N]` over a reduced draft vocabulary of N ids where the shape names N;
- `draft_update_ms`: the drafter over an accepted path (depth + 2 tokens);
- `tree_ms`: the tree ops the executor brings (Triton kernels on CUDA): one frontier expansion,
  the final selection, greedy acceptance over the tree's logits, the accepted-KV move;

then `cycle_ms` = draft (update + depth passes) + verify (T = total_tokens) + tree (depth expansions
+ select + accept + move), the projected speed-up `tau * plain / cycle` for tau in {3.0, 4.0, 4.5},
the weight-bytes bound of the plain step from the measured copy bandwidth, and `loop`: the real
decoding loop (`SpeculativeDecoder.generate`, Python glue and host syncs included) timed per cycle
and per plain token over the same executor, and `breakdown`: the cycle's parts as
benchmarks/step_breakdown.py files them on a CPU, host time included (loop minus parts). Caches
are filled with random values, sized for `context` tokens of prompt plus as many of output; masks
attend to `context` cached tokens.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from timing import copy_bandwidth_gbs, interleaved_median_ms, median_ms  # noqa: E402

from griffin_trt.recipe import Limits, TreeConfig  # noqa: E402

TAUS = (3.0, 4.0, 4.5)  # the acceptance lengths GRIFFIN reports on 7-8B targets
VERIFY_T = (1, 16, 32)  # plus the tree's total_tokens


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    rope_theta: float
    max_pos: int
    drafter_inter: int
    drafter_heads: int
    drafter_kv_heads: int
    draft_vocabs: tuple[int, ...]  # reduced draft vocabularies to time
    context: int  # cached tokens the masks attend to (cache capacity: 2 x context + tree)
    source: str


SHAPES = {
    "llama3-8b": Shape(
        vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8, inter=14336, rope_theta=500000.0, max_pos=8192,
        drafter_inter=11008, drafter_heads=32, drafter_kv_heads=32, draft_vocabs=(16384, 32768), context=1024,
        source="Meta-Llama-3-8B-Instruct config.json; its released GRIFFIN drafter (I 11008, 32 KV heads)",
    ),
    "vicuna-7b": Shape(
        vocab=32000, hidden=4096, layers=32, heads=32, kv_heads=32, inter=11008, rope_theta=10000.0, max_pos=4096,
        drafter_inter=11008, drafter_heads=32, drafter_kv_heads=32, draft_vocabs=(), context=1024,
        source="vicuna-7b-v1.5 config.json; its released GRIFFIN drafter",
    ),
    # CPU: the same code path at a size a CI machine runs in seconds (GQA, a vocabulary 16x smaller
    # than LLaMA-3's, reduced vocabularies at the same 1/8 and 1/4 ratios as 16k and 32k of 128k).
    "small": Shape(
        vocab=8192, hidden=256, layers=4, heads=8, kv_heads=2, inter=688, rope_theta=500000.0, max_pos=2048,
        drafter_inter=512, drafter_heads=8, drafter_kv_heads=8, draft_vocabs=(1024, 2048), context=128,
        source="a small LLaMA-3-like shape for CPU runs",
    ),
}



def _demo_shape() -> Shape:
    """The demo pair's shapes, read from its configs: its drafter pass with and without a reduced
    draft vocabulary, timed apart from the loop."""
    t = json.loads((REPO / "griffin_trt/demo/target/config.json").read_text())
    d = json.loads((REPO / "griffin_trt/demo/drafter/config.json").read_text())
    return Shape(
        vocab=t["vocab_size"], hidden=t["hidden_size"], layers=t["num_hidden_layers"], heads=t["num_attention_heads"],
        kv_heads=t["num_key_value_heads"], inter=t["intermediate_size"], rope_theta=d["rope_theta"],
        max_pos=t["max_position_embeddings"], drafter_inter=d["intermediate_size"], drafter_heads=d["num_attention_heads"],
        drafter_kv_heads=d["num_key_value_heads"], draft_vocabs=(t["vocab_size"] // 4, t["vocab_size"] // 2), context=256,
        source="griffin_trt/demo target and drafter configs (random weights)",
    )


SHAPES["demo"] = _demo_shape()

# Published batch-1 figures on one H100 with an 8B target (DESIGN.md "Numbers to respect"): quoted,
# not measured here.
PEERS = [
    {"system": "SGLang, plain decoding", "model": "LLaMA-3.1-8B-Instruct", "bench": "MT-Bench", "tok_s": 158, "tau": None},
    {"system": "SGLang + EAGLE-2", "model": "LLaMA-3.1-8B-Instruct", "bench": "MT-Bench", "tok_s": 244, "tau": None},
    {"system": "SGLang + EAGLE-3", "model": "LLaMA-3.1-8B-Instruct", "bench": "MT-Bench", "tok_s": 373, "tau": None},
    {"system": "EAGLE-2 (Spec-Bench)", "model": "7-8B", "bench": "Spec-Bench", "tok_s": None, "tau": 4.36},
]


def build(shape: Shape, device: torch.device, dtype: torch.dtype, max_batch: int, tree: TreeConfig):
    """Target + drafter with random weights, materialised on `device` (no CPU copy), in an executor."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from griffin_trt.models import DraftStep, GriffinDrafter, TargetModel
    from griffin_trt.models.drafter import DrafterConfig
    from griffin_trt.models.pair import ModelPair
    from griffin_trt.runtime.executors.torch_executor import TorchExecutor

    cfg = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.inter,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        rope_theta=shape.rope_theta, max_position_embeddings=shape.max_pos, tie_word_embeddings=False,
        rms_norm_eps=1e-5,
    )
    dcfg = DrafterConfig(
        hidden_size=shape.hidden, intermediate_size=shape.drafter_inter, num_attention_heads=shape.drafter_heads,
        num_key_value_heads=shape.drafter_kv_heads, vocab_size=shape.vocab, rms_norm_eps=1e-5,
        rope_theta=shape.rope_theta, max_position_embeddings=shape.max_pos,
    )
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
            target = TargetModel(hf.eval().requires_grad_(False))
            drafter = GriffinDrafter(dcfg)
    finally:
        torch.set_default_dtype(previous)
    drafter.embed_tokens = target.embed_tokens  # a drafter's embedding is a frozen copy of the target's
    drafter.eval().requires_grad_(False)
    pair = ModelPair(target, drafter, DraftStep(drafter, target.lm_head, tree.top_k))
    limits = Limits(max_batch=max_batch, max_input_len=shape.context, max_output_len=shape.context)
    ex = TorchExecutor(
        pair, limits.max_seq_len + tree.tree_size, limits.max_seq_len + tree.max_accept + tree.drafter_slots, max_batch
    )
    ex.reset(max_batch)
    for cache in (ex.tk, ex.tv, ex.dk, ex.dv):  # never time on zeros
        cache.normal_(0.0, 1.0)
    return ex, limits


def weight_bytes(target) -> tuple[int, int]:
    """(bytes a one-token step streams: every weight but the embedding table, which is gathered;
    bytes of the embedding table)."""
    emb = target.embed_tokens.weight
    total = sum(p.numel() * p.element_size() for p in target.parameters())
    return total - emb.numel() * emb.element_size(), emb.numel() * emb.element_size()


def _mask(b: int, t: int, s: int, ctx: int, device) -> torch.Tensor:
    """Attend to `ctx` cached slots and causally to the t new ones written at ctx.."""
    cols = torch.arange(s, device=device)[None, None, :]
    rows = torch.arange(t, device=device)[None, :, None]
    return ((cols < ctx) | ((cols >= ctx) & (cols <= ctx + rows))).expand(b, t, s).contiguous()


def candidates(ops, scores, logp, child, depth: int):
    """A dynamic draft's candidates as the loop assembles them (root children at depth 1, then
    `depth` expansions of the k-node frontier): (cand_scores, ids, parents, depths) [B, k + depth*k*k]."""
    b, k = scores.shape
    dev = scores.device
    cs, ci = [scores], [child[:, 0]]
    cp = [torch.full((b, k), -1, dtype=torch.long, device=dev)]
    cd = [torch.ones(b, k, dtype=torch.long, device=dev)]
    fidx = torch.arange(k, device=dev).expand(b, k)
    front = scores
    for i in range(depth):
        cand, cids, front, _, nflat = ops.expand(front, logp, child, k)
        cs.append(cand)
        ci.append(cids)
        cp.append(fidx.repeat_interleave(k, dim=1))
        cd.append(torch.full_like(cids, i + 2))
        fidx = k + i * k * k + nflat
    return torch.cat(cs, 1), torch.cat(ci, 1), torch.cat(cp, 1), torch.cat(cd, 1)


def time_batch(ex, tree: TreeConfig, shape: Shape, b: int, reps: int, gen: torch.Generator) -> dict:
    from griffin_trt.models import DraftStep
    from griffin_trt.models.draft_vocab import select_draft_vocab
    from griffin_trt.runtime.executors.torch_executor import CudaGraphed

    dev, spec = ex.spec.device, ex.spec
    ctx, k, V, H = shape.context, tree.top_k, spec.vocab_size, spec.hidden_size
    ex.reset(b)

    def ids(t: int) -> torch.Tensor:
        return torch.randint(0, V, (b, t), generator=gen).to(dev)

    def slots(t: int) -> torch.Tensor:
        return (ctx + torch.arange(t, device=dev)).expand(b, t).contiguous()

    def target_args(t: int):
        return ids(t), slots(t), slots(t), _mask(b, t, spec.target_kv_len, ctx, dev)

    def draft_args(t: int):
        feats = (torch.randn(b, t, H, generator=gen) * 2.0).to(dev, spec.feature_dtype)
        return feats, ids(t), slots(t), slots(t), _mask(b, t, spec.drafter_kv_len, ctx, dev)

    def timed(fn, *args) -> float:
        return median_ms(lambda: fn(*args), dev, reps=reps)

    out: dict = {}
    out["plain_ms"] = timed(ex.target_step, *target_args(1))
    out["verify_ms"] = {str(t): timed(ex.target_step, *target_args(t)) for t in (*VERIFY_T, tree.total_tokens)}
    out["draft_update_ms"] = timed(ex.draft_step, *draft_args(tree.max_accept))

    # The frontier pass, over the full vocabulary and the reduced ones, timed in turn (fair ratios).
    pass_args = draft_args(k)
    passes = {"full": lambda: ex.draft_step(*pass_args)}
    pair = ex.pair
    for n in shape.draft_vocabs:
        counts = torch.randint(0, 1 << 20, (V,), generator=gen).tolist()
        step = DraftStep(pair.drafter, pair.target.lm_head, k, select_draft_vocab(counts, n))

        def eager(*a, step=step):
            return step(*a, ex.dk, ex.dv)[:3]

        graphed = CudaGraphed(eager, max_tokens=256, rows=lambda: ex.rows) if dev.type == "cuda" else eager  # as TorchExecutor does

        def run(graphed=graphed):
            with torch.inference_mode():
                return graphed(*pass_args)

        passes[str(n)] = run
    pass_ms = interleaved_median_ms(passes, dev, reps=reps)
    out["draft_pass_ms"] = pass_ms.pop("full")
    out["draft_pass_reduced_ms"] = pass_ms
    del passes

    ops = ex.tree_ops()
    depth, total = tree.depth, tree.total_tokens
    scores = (-torch.rand(b, k, generator=gen) * 3).to(dev)
    logp = torch.log_softmax(torch.randn(b, k, k, generator=gen), -1).to(dev)
    child = torch.randint(0, V, (b, k, k), generator=gen).to(dev)
    root = ids(1)[:, 0]
    a = tree.max_accept
    dst = slots(a)
    src = dst + torch.randint(0, total - a, (b, 1), generator=gen).to(dev)
    with torch.inference_mode():
        cand = candidates(ops, scores, logp, child, depth)
        tree_nodes = ops.select(root, *cand, total, depth + 1)
        logits = torch.randn(b, total, V, generator=gen).to(dev)
        out["tree_ms"] = {
            "expand": timed(ops.expand, scores, logp, child, k),
            "select": timed(ops.select, root, *cand, total, depth + 1),
            "accept": timed(ops.greedy_accept, tree_nodes, logits),
            "kv_move": timed(ex.move_target_kv, src, dst),
        }
    out["tree_ops"] = ops.name
    return out


def cycle_summary(r: dict, tree: TreeConfig) -> None:
    """Adds cycle_ms and the projected speed-ups to one batch's timings."""
    t = r["tree_ms"]
    draft = r["draft_update_ms"] + tree.depth * r["draft_pass_ms"]
    verify = r["verify_ms"][str(tree.total_tokens)]
    tree_ops = tree.depth * t["expand"] + t["select"] + t["accept"] + t["kv_move"]
    total = draft + verify + tree_ops
    r["cycle_ms"] = {"draft": draft, "verify": verify, "tree": tree_ops, "total": total}
    r["projected_speedup"] = {str(tau): tau * r["plain_ms"] / total for tau in TAUS}
    r["projected_speedup_reduced_vocab"] = {
        n: {str(tau): tau * r["plain_ms"] / (total - tree.depth * (r["draft_pass_ms"] - ms)) for tau in TAUS}
        for n, ms in r["draft_pass_reduced_ms"].items()
    }


def breakdown(r: dict, tree: TreeConfig) -> dict:
    """The parts of one cycle, as benchmarks/step_breakdown.py files them on a CPU: drafter passes,
    tree ops (KV move included), the drafter update, the verify, and host time = the real loop's
    cycle minus the parts timed alone (negative where the host's work hides under the GPU's).
    `overhead_vs_verify`: (drafter passes + tree ops + host) / verify, the share the GPU goal bounds."""
    c = r["cycle_ms"]
    passes = tree.depth * r["draft_pass_ms"]
    host = r["loop"]["cycle_ms"] - c["total"]
    return {"draft_passes_ms": passes, "tree_ops_ms": c["tree"], "draft_update_ms": r["draft_update_ms"],
            "verify_ms": c["verify"], "host_ms": host, "overhead_vs_verify": (passes + c["tree"] + max(host, 0.0)) / c["verify"]}


def time_loop(ex, tree: TreeConfig, limits: Limits, b: int, gen: torch.Generator, new_tokens: int) -> dict:
    """Wall time per cycle of the real loop (difference of two generations, so prefill cancels)."""
    from griffin_trt.runtime import SpeculativeDecoder

    dec = SpeculativeDecoder(ex, tree, limits)
    prompt_len = min(64, limits.max_input_len)
    prompts = torch.randint(0, ex.spec.vocab_size, (b, prompt_len), generator=gen).tolist()
    sync = torch.cuda.synchronize if ex.spec.device.type == "cuda" else (lambda: None)

    def run(n: int, speculative: bool) -> tuple[float, int]:
        sync()
        t0 = time.perf_counter()
        res = dec.generate(prompts, n, speculative=speculative)
        sync()
        return time.perf_counter() - t0, max(r.target_forwards for r in res)

    out = {}
    for name, spec in (("cycle_ms", True), ("plain_ms_per_token", False)):
        run(4, spec)  # warm-up: captures every decode-time graph of this batch
        t_short, n_short = run(2, spec)
        t_long, n_long = run(new_tokens, spec)
        out[name] = 1e3 * (t_long - t_short) / max(n_long - n_short, 1)
        if spec:
            out["cycles_timed"] = n_long - n_short
    out["projected_speedup"] = {str(tau): tau * out["plain_ms_per_token"] / out["cycle_ms"] for tau in TAUS}
    return out


def run_shape(name: str, device: torch.device, dtype: torch.dtype, batches, reps: int, loop_tokens: int) -> dict:
    shape = SHAPES[name]
    tree = TreeConfig()
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    ex, limits = build(shape, device, dtype, max(batches), tree)
    build_s = time.perf_counter() - t0
    streamed, embedding = weight_bytes(ex.pair.target)
    res = {
        "config": asdict(shape),
        "dtype": str(dtype).removeprefix("torch."),
        "tree": {"top_k": tree.top_k, "depth": tree.depth, "total_tokens": tree.total_tokens},
        "target_kv_len": ex.spec.target_kv_len,
        "drafter_kv_len": ex.spec.drafter_kv_len,
        "target_params": sum(p.numel() for p in ex.pair.target.parameters()),
        "drafter_params_own": sum(p.numel() for n, p in ex.pair.drafter.named_parameters() if not n.startswith("embed")),
        "weight_bytes_streamed": streamed,
        "embedding_bytes": embedding,
        "build_s": build_s,
        "batches": {},
    }
    t = ex.pair.target
    for b in batches:
        r = time_batch(ex, tree, shape, b, reps, gen)
        cycle_summary(r, tree)
        kv_bytes = 2 * t.num_layers * b * t.num_kv_heads * ex.spec.target_kv_len * t.head_dim * t.dtype.itemsize
        r["kv_bytes_read_plain"] = kv_bytes  # our attention reads the whole static cache
        r["loop"] = time_loop(ex, tree, limits, b, gen, loop_tokens)
        r["breakdown"] = breakdown(r, tree)
        res["batches"][str(b)] = r
        print(f"  {name} batch {b}: plain {r['plain_ms']:.3f} ms, cycle {r['cycle_ms']['total']:.3f} ms, "
              f"loop cycle {r['loop']['cycle_ms']:.3f} ms", flush=True)
    del ex, t
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def add_bounds(result: dict) -> None:
    bw = result["copy_bandwidth_gbs"] * 1e9
    for s in result["shapes"].values():
        s["bound_weights_ms"] = 1e3 * s["weight_bytes_streamed"] / bw
        for r in s["batches"].values():
            r["bound_weights_kv_ms"] = 1e3 * (s["weight_bytes_streamed"] + r["kv_bytes_read_plain"]) / bw


def _f(x, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def to_markdown(result: dict) -> str:
    env = result["env"]
    lines = [
        f"Device: {env['device_name']} ({env['device']}); torch {env['torch']}, triton {env['triton']}, "
        f"transformers {env['transformers']}; measured copy bandwidth {result['copy_bandwidth_gbs']:.0f} GB/s "
        "(bytes read + written). Random weights; ms are medians of repeated timed runs after warm-up"
        f"{' (CUDA events, CUDA graphs)' if env['device'] == 'cuda' else ' (host clock)'}.",
        "",
    ]
    for name, s in result["shapes"].items():
        c = s["config"]
        taus = " / ".join(str(t) for t in TAUS)
        lines += [
            f"#### {name} ({s['dtype']}; {s['target_params'] / 1e9:.2f} B target params, vocab {c['vocab']}, "
            f"tree k={s['tree']['top_k']} depth {s['tree']['depth']} total {s['tree']['total_tokens']}, "
            f"caches {s['target_kv_len']} slots, {c['context']} attended)",
            "",
            f"Weight-bytes bound of the plain step: {s['bound_weights_ms']:.3f} ms "
            f"({s['weight_bytes_streamed'] / 1e9:.2f} GB streamed).",
            "",
            "| batch | plain ms | bound ms (weights+KV) | verify T=1 / 16 / 32 / 60 ms | draft pass ms | update ms "
            f"| tree ms | cycle ms | projected x (tau {taus}) | loop: plain ms/tok, cycle ms, projected x |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for b, r in s["batches"].items():
            v = r["verify_ms"]
            proj = " / ".join(_f(x) for x in r["projected_speedup"].values())
            lp = r["loop"]
            lproj = " / ".join(_f(x) for x in lp["projected_speedup"].values())
            lines.append(
                f"| {b} | {_f(r['plain_ms'], 3)} | {_f(r['bound_weights_kv_ms'], 3)} | "
                f"{' / '.join(_f(x, 3) for x in v.values())} | {_f(r['draft_pass_ms'], 3)} | "
                f"{_f(r['draft_update_ms'], 3)} | {_f(r['cycle_ms']['tree'], 3)} | {_f(r['cycle_ms']['total'], 3)} | "
                f"{proj} | {_f(lp['plain_ms_per_token'], 3)}, {_f(lp['cycle_ms'], 3)}, {lproj} |"
            )
        lines += ["", "Per cycle (ms): drafter passes + tree ops + host, against the verify:", "",
                  "| batch | drafter passes | tree ops | update | verify | host (loop - parts) | (passes + tree + host) / verify |",
                  "|---|---|---|---|---|---|---|"]
        for b, r in s["batches"].items():
            d = r["breakdown"]
            lines.append(f"| {b} | {_f(d['draft_passes_ms'], 3)} | {_f(d['tree_ops_ms'], 3)} | {_f(d['draft_update_ms'], 3)} | "
                         f"{_f(d['verify_ms'], 3)} | {_f(d['host_ms'], 3)} | {100 * d['overhead_vs_verify']:.0f}% |")
        if c["draft_vocabs"]:
            lines += ["", "Reduced draft vocabulary, drafter pass over the frontier (ms) and projected x at tau "
                      f"{taus}:", "", "| batch | full vocab | " + " | ".join(f"N = {n}" for n in c["draft_vocabs"]) + " |",
                      "|---|---|" + "---|" * len(c["draft_vocabs"])]
            for b, r in s["batches"].items():
                cells = [
                    f"{_f(r['draft_pass_reduced_ms'][str(n)], 3)} ms, "
                    + " / ".join(_f(x) for x in r["projected_speedup_reduced_vocab"][str(n)].values())
                    for n in c["draft_vocabs"]
                ]
                lines.append(f"| {b} | {_f(r['draft_pass_ms'], 3)} ms | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Published peers (batch 1, one H100; quoted from their reports, not measured here):", "",
              "| system | model | benchmark | tok/s | tau |", "|---|---|---|---|---|"]
    for p in result["peers"]:
        lines.append(f"| {p['system']} | {p['model']} | {p['bench']} | {p['tok_s'] or '-'} | {p['tau'] or '-'} |")
    return "\n".join(lines) + "\n"


def environment(device: torch.device) -> dict:
    import transformers

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", choices=sorted(SHAPES), default=None,
                    help="named shape (repeatable); default: llama3-8b and vicuna-7b on CUDA, small on CPU")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--reps", type=int, default=20, help="timed runs per figure (median)")
    ap.add_argument("--loop-tokens", type=int, default=34, help="tokens generated when timing the real loop")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                    help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: with shared cores more threads spin and distort timings)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA GPU")
    shapes = args.shape or (["llama3-8b", "vicuna-7b"] if device.type == "cuda" else ["small"])
    if device.type == "cpu" and any(s not in ("small", "demo") for s in shapes):
        ap.error("real model shapes need a CUDA GPU (about 20 GB of weights); on CPU use --shape small or demo")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    batches = [int(x) for x in args.batches.split(",")]

    result = {"env": environment(device), "peers": PEERS, "taus": list(TAUS)}
    result["copy_bandwidth_gbs"] = copy_bandwidth_gbs(device, (1 << 30) if device.type == "cuda" else (1 << 27))
    print(f"{result['env']['device_name']}: copy bandwidth {result['copy_bandwidth_gbs']:.0f} GB/s", flush=True)
    result["shapes"] = {}
    for name in shapes:
        result["shapes"][name] = run_shape(name, device, dtype, batches, args.reps, args.loop_tokens)
    add_bounds(result)
    md = to_markdown(result)
    print(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.markdown:
        args.markdown.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
