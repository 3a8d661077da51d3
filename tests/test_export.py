"""ONNX export of the target and drafter steps, and the onnxruntime executor against the torch one."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from griffin_trt.builders.export_onnx import (  # noqa: E402
    ExportError,
    drafter_io,
    export_drafter,
    export_target,
    read_graph_metadata,
    target_io,
)
from griffin_trt.builders.kv_layout import cache_pairs  # noqa: E402
from griffin_trt.models import load_pair  # noqa: E402
from griffin_trt.recipe import recipe_from_dict  # noqa: E402
from griffin_trt.runtime.executors.ort_executor import OrtExecutor  # noqa: E402
from griffin_trt.runtime.executors.torch_executor import TorchExecutor  # noqa: E402
from tiny_models import make_drafter, make_target  # noqa: E402

ATOL = 1e-4
VOCAB, HIDDEN, TOP_K = 96, 32, 4


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    target = make_target(root / "target", vocab=VOCAB, hidden=HIDDEN)
    drafter = make_drafter(root / "drafter", target=target, hidden=HIDDEN, vocab=VOCAB)
    return target, drafter


@pytest.fixture(scope="module")
def recipe(pair_dirs):
    target, drafter = pair_dirs
    data = {
        "model": {"target": str(target), "drafter": str(drafter)},
        "tree": {"top_k": TOP_K, "depth": 3, "total_tokens": 10},
        "limits": {"max_batch": 2, "max_input_len": 16, "max_output_len": 16},
    }
    return recipe_from_dict(data, base=target.parent)


@pytest.fixture(scope="module", params=["inplace", "copy"])
def graphs(request, tmp_path_factory, pair_dirs, recipe):
    """Both graphs from the dynamo exporter (the default path) in one KV flavour, exported once."""
    out = tmp_path_factory.mktemp(f"graphs-{request.param}")
    pair = load_pair(*pair_dirs, top_k=TOP_K)
    t = export_target(pair.target, recipe.target_kv_len, out / "target.onnx", max_tokens=16, flavour=request.param)
    d = export_drafter(pair.draft_step, recipe.drafter_kv_len, out / "drafter.onnx", max_tokens=16,
                       flavour=request.param)
    return t, d


def _flavour(res) -> str:
    return read_graph_metadata(res.path)["kv_flavour"]


def _executors(pair_dirs, recipe, t_path, d_path, max_batch=2, **kw):
    ort_ex = OrtExecutor(
        t_path, d_path, vocab_size=VOCAB, hidden_size=HIDDEN, top_k=TOP_K,
        target_kv_len=recipe.target_kv_len, drafter_kv_len=recipe.drafter_kv_len, max_batch=max_batch, device="cpu",
        **kw,
    )
    torch_ex = TorchExecutor.from_paths(
        *pair_dirs, top_k=TOP_K, target_kv_len=recipe.target_kv_len, drafter_kv_len=recipe.drafter_kv_len,
        max_batch=max_batch,
    )
    return ort_ex, torch_ex


def _close(a, b, what):
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape, a.dtype, b.dtype)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL, msg=what)


def _scenario(ex_a, ex_b, S_t, S_d, batch=2):
    """Prefill (padded, causal) -> drafter prefill -> frontier draft step -> tree verify -> move KV ->
    drafter update -> decode step; every output of A must match B."""
    g = torch.Generator().manual_seed(0)
    for ex in (ex_a, ex_b):
        ex.reset(batch)
    lens = torch.tensor([7, 5][:batch])
    P = int(lens.max())
    tokens = torch.randint(0, VOCAB, (batch, P), generator=g)
    pos = torch.arange(P).expand(batch, P)
    cols_t, cols_d = torch.arange(S_t), torch.arange(S_d)

    def causal(cols):
        c = cols[None, None, :]
        return (c <= pos[:, :, None]) & (c < lens[:, None, None])

    outs = [ex.target_step(tokens, pos, pos, causal(cols_t)) for ex in (ex_a, ex_b)]
    _close(outs[0][0], outs[1][0], "prefill logits")
    _close(outs[0][1], outs[1][1], "prefill hidden")
    hidden = outs[1][1]

    outs = [ex.draft_step(hidden, tokens, pos, pos, causal(cols_d)) for ex in (ex_a, ex_b)]
    _close(outs[0][0], outs[1][0], "drafter prefill top-k log-probs")
    assert torch.equal(outs[0][1], outs[1][1]), "drafter prefill top-k ids"
    _close(outs[0][2], outs[1][2], "drafter prefill regress")

    # Frontier pass: TOP_K nodes at depth 1 written after the context, each attending to itself.
    ctx = lens
    feats = torch.randn(batch, TOP_K, HIDDEN, generator=g)
    ftok = torch.randint(0, VOCAB, (batch, TOP_K), generator=g)
    fpos = ctx[:, None].expand(batch, TOP_K)
    fwrite = ctx[:, None] + torch.arange(TOP_K)
    fmask = (cols_d[None, None, :] < ctx[:, None, None]).expand(batch, TOP_K, S_d).clone()
    fmask.scatter_(2, fwrite[:, :, None], True)
    outs = [ex.draft_step(feats, ftok, fpos, fwrite, fmask) for ex in (ex_a, ex_b)]
    _close(outs[0][0], outs[1][0], "frontier top-k log-probs")
    assert torch.equal(outs[0][1], outs[1][1]), "frontier top-k ids"
    _close(outs[0][2], outs[1][2], "frontier regress")

    # Tree verify: root + two children of the root + one grandchild (parents 0, 0, 0, 1).
    parents = [-1, 0, 0, 1]
    T = len(parents)
    depth = torch.tensor([0, 1, 1, 2])
    anc = torch.zeros(T, T, dtype=torch.bool)
    for i, p in enumerate(parents):
        anc[i, i] = True
        if p >= 0:
            anc[i] |= anc[p]
    ttok = torch.randint(0, VOCAB, (batch, T), generator=g)
    tpos = ctx[:, None] + depth
    twrite = ctx[:, None] + torch.arange(T)
    tmask = (cols_t[None, None, :] < ctx[:, None, None]).expand(batch, T, S_t).clone()
    tmask.scatter_(2, twrite[:, None, :].expand(batch, T, T), anc.expand(batch, T, T))
    outs = [ex.target_step(ttok, tpos, twrite, tmask) for ex in (ex_a, ex_b)]
    _close(outs[0][0], outs[1][0], "verify logits")
    _close(outs[0][1], outs[1][1], "verify hidden")

    # Accept path root -> node 1 -> node 3: move slots ctx+[0,1,3] to ctx+[0,1,2].
    path = torch.tensor([0, 1, 3])
    dst = ctx[:, None] + torch.arange(3)
    src = ctx[:, None] + path
    for ex in (ex_a, ex_b):
        ex.move_target_kv(src, dst)

    # Decode one token after the accepted path: attends to the moved entries.
    new_ctx = ctx + 3
    dpos = new_ctx[:, None]
    dmask = cols_t[None, None, :] <= dpos[:, :, None]
    dtok = torch.randint(0, VOCAB, (batch, 1), generator=g)
    outs = [ex.target_step(dtok, dpos, dpos, dmask) for ex in (ex_a, ex_b)]
    _close(outs[0][0], outs[1][0], "decode logits after move_target_kv")
    _close(outs[0][1], outs[1][1], "decode hidden after move_target_kv")


def test_graphs_check_and_have_the_interface(graphs, recipe):
    t, d = graphs
    flavour = _flavour(t)
    assert t.exporter == "dynamo" and d.exporter == "dynamo" and _flavour(d) == flavour
    for res, (ins, outs), kv in (
        (t, target_io(flavour, 2), recipe.target_kv_len),
        (d, drafter_io(flavour), recipe.drafter_kv_len),
    ):
        m = onnx.load(str(res.path))
        onnx.checker.check_model(m)
        opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        assert opset == (24 if flavour == "inplace" else 18)
        assert [i.name for i in m.graph.input] == list(ins)
        assert [o.name for o in m.graph.output] == list(outs)
        shapes = {v.name: [x.dim_param or x.dim_value for x in v.type.tensor_type.shape.dim]
                  for v in list(m.graph.input) + list(m.graph.output)}
        # B and T dynamic, cache capacity static
        assert isinstance(shapes["tokens"][0], str) and isinstance(shapes["tokens"][1], str)
        assert shapes["mask"][2] == kv
        for cache_in, cache_out in cache_pairs(ins):
            assert all(isinstance(x, int) for x in shapes[cache_in] if x != shapes["tokens"][0])
            assert shapes[cache_in] == shapes[cache_out]
            if flavour == "inplace":  # per layer [B, KVH, S, D], batch leading
                assert shapes[cache_in][0] == shapes["tokens"][0] and shapes[cache_in][2] == kv
        meta = read_graph_metadata(res.path)
        assert int(meta["kv_len"]) == kv and meta["exporter"] == "dynamo"
    m = onnx.load(str(d.path))
    topk = {o.name: o for o in m.graph.output}["topk_ids"]
    assert topk.type.tensor_type.shape.dim[2].dim_value == TOP_K
    if flavour == "inplace":  # logits only for the asked rows: their own axis, not the tokens axis
        m = onnx.load(str(t.path))
        dims = {v.name: [x.dim_param or x.dim_value for x in v.type.tensor_type.shape.dim]
                for v in list(m.graph.input) + list(m.graph.output)}
        assert dims["logits"][1] == dims["logit_index"][1] != dims["tokens"][1]
        ops = [n.op_type for n in m.graph.node]
        assert ops.count("TensorScatter") == 4 and "ScatterElements" not in ops


def test_ort_matches_torch_through_the_executor_interface(graphs, pair_dirs, recipe):
    t, d = graphs
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path)
    assert ort_ex.spec.feature_dtype == torch.float32 and ort_ex.spec.device.type == "cpu"
    _scenario(ort_ex, torch_ex, recipe.target_kv_len, recipe.drafter_kv_len, batch=2)
    # caches after the whole scenario agree too (including the moved entries)
    if _flavour(t) == "inplace":
        for i in range(2):
            torch.testing.assert_close(ort_ex._tc.full[2 * i], torch_ex._tk[i], atol=ATOL, rtol=ATOL)
            torch.testing.assert_close(ort_ex._tc.full[2 * i + 1], torch_ex._tv[i], atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(ort_ex._dc.full[1], torch_ex._dv, atol=ATOL, rtol=ATOL)
    else:
        torch.testing.assert_close(ort_ex._tc.inputs()["k_cache"], torch_ex.tk, atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(ort_ex._dc.inputs()["v_cache"], torch_ex.dv, atol=ATOL, rtol=ATOL)
    # a smaller batch after a larger one reuses the same storage
    _scenario(ort_ex, torch_ex, recipe.target_kv_len, recipe.drafter_kv_len, batch=1)


def test_logit_index_picks_the_rows(graphs, pair_dirs, recipe):
    t, d = graphs
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, VOCAB, (2, 6), generator=g)
    pos = torch.arange(6).expand(2, 6)
    mask = torch.arange(recipe.target_kv_len)[None, None, :] <= pos[:, :, None]
    rows = torch.tensor([[5, 1, 1], [0, 4, 2]])
    for ex in (ort_ex, torch_ex):
        ex.reset(2)
        full, _ = ex.target_step(tokens, pos, pos, mask)
        ex.reset(2)
        some, _ = ex.target_step(tokens, pos, pos, mask, logit_index=rows)
        assert some.shape == (2, 3, VOCAB)
        torch.testing.assert_close(some, full.gather(1, rows[..., None].expand(-1, -1, VOCAB)), atol=ATOL, rtol=ATOL)


@pytest.mark.parametrize("graphs", ["inplace"], indirect=True)
def test_in_place_graphs_update_without_copies(graphs, pair_dirs, recipe, capfd):
    """onnxruntime warns when TensorScatter copies the cache instead of updating it in place; the
    executor binds input and output to one buffer, so it must stay silent (and warns otherwise)."""
    t, d = graphs
    assert _flavour(t) == "inplace"
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path, log_severity=2)
    capfd.readouterr()
    _scenario(ort_ex, torch_ex, recipe.target_kv_len, recipe.drafter_kv_len, batch=2)
    assert "in-place optimization not activated" not in capfd.readouterr().err
    # control: the same graph with a separate output buffer does copy, and says so
    ex = ort_ex
    b, tt = 1, 2
    ex.reset(b)
    feeds = {"tokens": torch.zeros(b, tt, dtype=torch.long), "positions": torch.zeros(b, tt, dtype=torch.long),
             "write_index": torch.arange(tt)[None], "mask": torch.ones(b, tt, recipe.target_kv_len, dtype=torch.bool),
             "logit_index": torch.zeros(b, 1, dtype=torch.long), **ex._tc.inputs()}
    outs = {"logits": torch.empty(b, 1, VOCAB), "hidden": torch.empty(b, tt, HIDDEN),
            **{k: v.clone() for k, v in ex._tc.outputs().items()}}
    ex.target.run(feeds, outs)
    assert "in-place optimization not activated" in capfd.readouterr().err


def test_rows_can_be_selected_and_moved_in_place_only(graphs, pair_dirs, recipe):
    t, d = graphs
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path)
    if _flavour(t) == "copy":
        with pytest.raises(NotImplementedError, match="copy-flavour KV caches"):
            ort_ex.select_rows(1, 2)
        with pytest.raises(NotImplementedError, match="copy-flavour KV caches"):
            ort_ex.move_rows(1, 0)
        return
    # prefill row 1 alone, move it to row 0, decode on row 0: same logits as the torch executor's row 0
    tokens = torch.tensor([[3, 9, 27, 81 % VOCAB]])
    pos = torch.arange(4)[None]
    mask = torch.arange(recipe.target_kv_len)[None, None, :] <= pos[:, :, None]
    ort_ex.select_rows(1, 2)
    ort_ex.target_step(tokens, pos, pos, mask)
    ort_ex.move_rows(1, 0)
    ort_ex.select_rows(0, 1)
    torch_ex.reset(1)
    torch_ex.target_step(tokens, pos, pos, mask)
    step = (torch.tensor([[5]]), torch.tensor([[4]]), torch.tensor([[4]]),
            torch.arange(recipe.target_kv_len)[None, None, :] <= 4)
    a, _ = ort_ex.target_step(*step)
    b, _ = torch_ex.target_step(*step)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=ATOL)


def test_torchscript_exporter_graphs_match_too(tmp_path, pair_dirs, recipe):
    pair = load_pair(*pair_dirs, top_k=TOP_K)
    t = export_target(pair.target, recipe.target_kv_len, tmp_path / "target.onnx", 16, prefer="torchscript",
                      flavour="copy")
    d = export_drafter(pair.draft_step, recipe.drafter_kv_len, tmp_path / "drafter.onnx", 16, prefer="torchscript",
                       flavour="copy")
    assert t.exporter == d.exporter == "torchscript"
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path)
    _scenario(ort_ex, torch_ex, recipe.target_kv_len, recipe.drafter_kv_len)
    # export leaves the modules writing their caches in place again
    assert pair.target.inplace and pair.drafter.inplace


def test_dynamo_failure_falls_back_to_torchscript(tmp_path, pair_dirs, recipe, monkeypatch):
    pair = load_pair(*pair_dirs, top_k=TOP_K)
    real = torch.onnx.export

    def flaky(*a, **kw):
        if kw.get("dynamo"):
            raise RuntimeError("simulated dynamo failure")
        return real(*a, **kw)

    monkeypatch.setattr(torch.onnx, "export", flaky)
    res = export_target(pair.target, recipe.target_kv_len, tmp_path / "t.onnx", 16, flavour="copy")
    assert res.exporter == "torchscript"
    assert any("simulated dynamo failure" in n for n in res.notes)
    # in-place graphs need opset 24, which only the dynamo exporter writes: no fallback
    with pytest.raises(ExportError, match="simulated dynamo failure") as err:
        export_target(pair.target, recipe.target_kv_len, tmp_path / "t3.onnx", 16, flavour="inplace")
    assert "torchscript" not in str(err.value)

    def broken(*a, **kw):
        raise RuntimeError("both broken")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="dynamo exporter.*torchscript exporter"):
        export_target(pair.target, recipe.target_kv_len, tmp_path / "t2.onnx", 16, flavour="copy")


def test_ort_executor_rejects_bad_inputs(graphs, recipe):
    t, d = graphs
    ex = OrtExecutor(t.path, d.path, vocab_size=VOCAB, hidden_size=HIDDEN, top_k=TOP_K,
                     target_kv_len=recipe.target_kv_len, drafter_kv_len=recipe.drafter_kv_len, max_batch=2)
    with pytest.raises(ValueError, match="max_batch"):
        ex.reset(3)
    ex.reset(1)
    tok = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="mask has shape"):
        ex.target_step(tok, tok, tok, torch.ones(1, 2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="reset for 1"):
        ex.target_step(tok.repeat(2, 1), tok.repeat(2, 1), tok.repeat(2, 1),
                       torch.ones(2, 2, recipe.target_kv_len, dtype=torch.bool))
    if _flavour(t) == "inplace":  # one TensorScatter run per row: other write patterns are refused
        with pytest.raises(ValueError, match="contiguous runs"):
            ex.target_step(tok, tok, torch.tensor([[3, 5]]), torch.ones(1, 2, recipe.target_kv_len, dtype=torch.bool))
    from griffin_trt.builders.manifest import ManifestError

    with pytest.raises(ManifestError, match="cache capacity"):
        OrtExecutor(t.path, d.path, vocab_size=VOCAB, hidden_size=HIDDEN, top_k=TOP_K,
                    target_kv_len=recipe.target_kv_len + 1, drafter_kv_len=recipe.drafter_kv_len, max_batch=2)


def test_greedy_generation_is_token_exact_with_the_torch_executor(graphs, pair_dirs, recipe):
    decoder_mod = pytest.importorskip("griffin_trt.runtime.decoder")
    t, d = graphs
    ort_ex, torch_ex = _executors(pair_dirs, recipe, t.path, d.path)
    prompts = [[3, 17, 42, 5, 9, 11, 60], [8, 1, 30]]
    outs = []
    for ex in (ort_ex, torch_ex):
        dec = decoder_mod.SpeculativeDecoder(ex, recipe.tree, recipe.limits, eos_ids=())
        res = dec.generate(prompts, max_new_tokens=12)
        outs.append([r.token_ids for r in res])
        plain = dec.generate(prompts, max_new_tokens=12, speculative=False)
        assert [r.token_ids for r in plain] == outs[-1]  # lossless against plain greedy
    assert outs[0] == outs[1]


def test_kv_bytes_report_reads_the_graphs_and_matches_the_executor(graphs, pair_dirs, recipe):
    """benchmarks/kv_bytes.py's figures, on this tiny pair: the graph-derived bytes equal the cache
    geometry, and the memory held equals what the onnxruntime executor allocates."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import kv_bytes

    t, d = graphs
    info = kv_bytes.graph_figures(t.path)
    layers, kvh, head_dim, elem = 2, 2, HIDDEN // 4, 4
    per_row_layer = kvh * recipe.target_kv_len * head_dim * elem * 2  # K and V
    b, tt = 2, 5
    c = kv_bytes.call_bytes(info, b, tt, layers_exported=layers)
    scale = kv_bytes.LLAMA3_8B["layers"] / layers
    assert c["attention"] == b * layers * per_row_layer * scale
    ort_ex, _ = _executors(pair_dirs, recipe, t.path, d.path, max_batch=b)
    assert c["held"] == ort_ex._tc.nbytes * scale
    if _flavour(t) == "copy":
        assert c["read"] == c["written"] == c["attention"] and c["held"] == 2 * c["attention"]
    else:
        assert c["read"] == c["written"] == b * layers * (kvh * tt * head_dim * elem * 2) * scale
        assert c["held"] == c["attention"]
