"""TensorRT engines for the tiny pair, run by TrtExecutor and compared with TorchExecutor (GPU hosts)."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.slow]


def _skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"TensorRT is not installed here (`import tensorrt`: {type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


_reason = _skip_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

import test_export as te  # noqa: E402  (tiny pair, scenario helpers)
from test_build import make_tokenizer  # noqa: E402

from griffin_trt.builders import build_engines as be  # noqa: E402
from griffin_trt.builders.manifest import ManifestError, read_manifest  # noqa: E402
from griffin_trt.recipe import recipe_from_dict  # noqa: E402
from griffin_trt.runtime.executors.torch_executor import TorchExecutor  # noqa: E402
from griffin_trt.runtime.executors.trt_executor import TrtExecutor  # noqa: E402
from tiny_models import make_drafter, make_target  # noqa: E402


@pytest.fixture(scope="module")
def trt_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    target = make_target(root / "target", vocab=te.VOCAB, hidden=te.HIDDEN, eos=2)
    make_tokenizer(target, te.VOCAB)
    drafter = make_drafter(root / "drafter", target=target, hidden=te.HIDDEN, vocab=te.VOCAB)
    recipe = recipe_from_dict(
        {
            "model": {"target": str(target), "drafter": str(drafter)},
            "tree": {"top_k": te.TOP_K, "depth": 3, "total_tokens": 10},
            "limits": {"max_batch": 2, "max_input_len": 16, "max_output_len": 16},
            "build": {"backend": "tensorrt", "output_dir": str(root / "out")},
        },
        base=root,
    )
    out = be.build(recipe, progress=False)
    return recipe, out, (target, drafter)


def test_engines_are_built_and_recorded(trt_build):
    import tensorrt as trt

    from griffin_trt.builders.kv_layout import flavour_for_tensorrt

    recipe, out, _ = trt_build
    m = read_manifest(out, verify_hashes=True, backend="tensorrt")
    assert m["backend"] == "tensorrt"
    assert m["versions"]["tensorrt"] == trt.__version__
    assert m["kv_flavour"] == flavour_for_tensorrt(trt.__version__)
    assert m["files"]["tree_expand_engine"] and m["files"]["tree_finalize_engine"]
    assert m["gpu"] == torch.cuda.get_device_name()
    assert (out / m["files"]["target_engine"]).is_file() and (out / m["files"]["drafter_engine"]).is_file()
    assert (out.parent / ".timing_cache").is_file()


def test_trt_executor_matches_torch(trt_build, monkeypatch):
    recipe, out, dirs = trt_build
    trt_ex = TrtExecutor.from_build_dir(out)
    torch_ex = TorchExecutor.from_paths(
        *dirs, top_k=te.TOP_K, target_kv_len=recipe.target_kv_len, drafter_kv_len=recipe.drafter_kv_len,
        max_batch=2, device="cuda",
    )

    class _Cuda:
        """Feeds CPU-built inputs to both executors on the GPU, compares on the CPU at 1e-3."""

        def __init__(self, ex):
            self.ex = ex

        def reset(self, b):
            self.ex.reset(b)

        def target_step(self, *a, logit_index=None):
            li = None if logit_index is None else logit_index.cuda()
            return tuple(x.cpu() for x in self.ex.target_step(*(y.cuda() for y in a), logit_index=li))

        def draft_step(self, *a):
            return tuple(x.cpu() for x in self.ex.draft_step(*(y.cuda() for y in a)))

        def move_target_kv(self, s, d):
            self.ex.move_target_kv(s.cuda(), d.cuda())

    monkeypatch.setattr(te, "ATOL", 1e-3)
    te._scenario(_Cuda(trt_ex), _Cuda(torch_ex), recipe.target_kv_len, recipe.drafter_kv_len, batch=2)


def test_in_place_engines_bind_each_cache_pair_to_one_buffer(trt_build):
    recipe, out, _ = trt_build
    ex = TrtExecutor.from_build_dir(out)
    if read_manifest(out)["kv_flavour"] != "inplace":
        pytest.skip("this TensorRT is older than 10.15: copy-flavour engines")
    for engine, caches in ((ex.target, ex._tc), (ex.drafter, ex._dc)):
        for cache_in, cache_out in caches.pairs:
            assert engine.engine.get_aliased_input_tensor(cache_out) == cache_in
    assert ex.stream.handle != 0  # not the legacy default stream


def test_trt_greedy_generation_matches_torch(trt_build):
    from griffin_trt.runtime.decoder import SpeculativeDecoder

    recipe, out, dirs = trt_build
    trt_ex = TrtExecutor.from_build_dir(out)
    assert trt_ex.tree_ops().name == "tensorrt-plugin"  # expand/select run in the plugin engines
    torch_ex = TorchExecutor.from_paths(
        *dirs, top_k=te.TOP_K, target_kv_len=recipe.target_kv_len, drafter_kv_len=recipe.drafter_kv_len,
        max_batch=2, device="cuda",
    )
    prompts = [[3, 17, 42, 5, 9, 11, 60], [8, 1, 30]]
    outs = []
    for ex in (trt_ex, torch_ex):
        res = SpeculativeDecoder(ex, recipe.tree, recipe.limits).generate(prompts, max_new_tokens=12)
        outs.append([r.token_ids for r in res])
    assert outs[0] == outs[1]


def test_plugin_tree_ops_equal_the_reference(trt_build):
    import _tree_kernel_cases as cases

    from griffin_trt.tree.ops import REFERENCE

    recipe, out, _ = trt_build
    ops = TrtExecutor.from_build_dir(out).tree_ops()
    assert ops.name == "tensorrt-plugin"
    k, depth, total = recipe.tree.top_k, recipe.tree.depth, recipe.tree.total_tokens
    g = torch.Generator().manual_seed(5)
    for b in (1, 2):
        s = cases._q(-torch.rand(b, k, generator=g) * 3, 0.25)
        lp = cases._logp((b, k, k), g)
        ids = torch.randint(0, te.VOCAB, (b, k, k), generator=g)
        got = ops.expand(s.cuda(), lp.cuda(), ids.cuda(), k)
        for x, y in zip(got, REFERENCE.expand(s, lp, ids, k)):
            assert torch.equal(x.cpu(), y)
        args = cases.draft(b, k, depth + 1, g, vocab=te.VOCAB)  # the candidates one draft of this tree makes
        got = ops.select(*(a.cuda() for a in args), total, depth + 1)
        ref = REFERENCE.select(*args, total, depth + 1)
        for name in ("tokens", "parents", "depths", "mask", "retrieve", "num_leaves"):
            assert torch.equal(getattr(got, name).cpu(), getattr(ref, name)), name


def test_version_mismatch_is_refused(trt_build, tmp_path):
    import json
    import shutil

    _, out, _ = trt_build
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["versions"]["tensorrt"] = "0.0.0"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="built with TensorRT 0.0.0"):
        TrtExecutor.from_build_dir(copy)
