"""Executor running the exported ONNX graphs with onnxruntime (CPU; CUDA where its provider exists).

It proves the graphs TensorRT parses: the same `target.onnx` / `drafter.onnx`, the same static
cache capacities, the same inputs. Caches live as torch tensors bound to the graphs through IO
binding (no copies at the boundary). In-place graphs (builders/kv_layout.py): each layer's cache
input and output are bound to one buffer, so onnxruntime's TensorScatter writes only the new
entries (it logs "in-place optimization not activated" at warning level when it has to copy
instead; tests check it does not). Copy-flavour graphs return the caches whole, written into a
second buffer; the two swap after every call.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import torch

from ...builders.manifest import ManifestError, build_file, read_manifest
from .base import CacheExecutor, ExecutorSpec, LayerCaches, caches_for, logit_rows

log = logging.getLogger(__name__)

# onnx.TensorProto element types (ORT's IO binding takes these integers, bfloat16 included).
_ONNX_TYPE = {torch.float32: 1, torch.int64: 7, torch.bool: 9, torch.float16: 10, torch.bfloat16: 16, torch.int32: 6}
_TORCH_TYPE = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(bfloat16)": torch.bfloat16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
    "tensor(bool)": torch.bool,
}


THREAD_POOLS = ("shared", "per-session")
_shared_pool_threads: int | None = None  # what this process's shared pool was made with


def _use_shared_pool(opts: ort.SessionOptions, threads: int | None) -> None:
    """Run the session on the process's one intra-op thread pool.

    With a pool per session, the drafter's pool threads keep spinning after each drafter pass while
    the target runs, on the same cores: measured on 2 cores, the verify that follows 5 drafter passes
    took 13-15 ms instead of its 8 ms alone (benchmarks/RESULTS.md). One pool has no such rival.
    The pool is made once per process, by the first session (its `threads`; 0: one per core).
    """
    global _shared_pool_threads
    if _shared_pool_threads is None:
        from onnxruntime.capi import _pybind_state

        try:
            _pybind_state.set_global_thread_pool_sizes(threads or 0, 1)
        except Exception as e:  # made earlier in this process by someone else: use it as it is
            log.info("onnxruntime's shared thread pool already exists (%s)", e)
        _shared_pool_threads = threads or 0
    elif threads and threads != _shared_pool_threads:
        log.warning("onnxruntime's shared thread pool has %s threads; threads=%d is ignored",
                    _shared_pool_threads or "one per core", threads)
    opts.use_per_session_threads = False


class _Graph:
    """One ONNX graph in an onnxruntime session, fed and drained through IO binding."""

    def __init__(self, path: Path, providers: list, device: torch.device, threads: int | None = None,
                 log_severity: int = 3, thread_pool: str = "shared"):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if thread_pool == "shared":
            _use_shared_pool(opts, threads)
        elif thread_pool != "per-session":
            raise ValueError(f"thread_pool {thread_pool!r} is not one of {list(THREAD_POOLS)}")
        elif _shared_pool_threads is not None:  # onnxruntime refuses per-session pools from then on
            raise ValueError("this process already runs onnxruntime sessions on the shared thread pool; "
                             "thread_pool='per-session' needs a process of its own")
        elif threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = log_severity
        self.path = path
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.device = device
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}
        self._dev = ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)

    def dtype(self, name: str) -> torch.dtype:
        arg = self.inputs.get(name) or self.outputs[name]
        try:
            return _TORCH_TYPE[arg.type]
        except KeyError:
            raise ManifestError(f"{self.path.name}: {name} has unsupported type {arg.type}") from None

    def cache_dtype(self) -> torch.dtype:
        return self.dtype(next(n for n in self.inputs if n.startswith("k_cache")))

    def static_shape(self, name: str) -> list:
        arg = self.inputs.get(name) or self.outputs[name]
        return list(arg.shape)

    def run(self, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor]) -> None:
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        binding = self.session.io_binding()
        dev, idx = self._dev
        for name, t in feeds.items():
            binding.bind_input(name, dev, idx, _ONNX_TYPE[t.dtype], tuple(t.shape), t.data_ptr())
        for name, t in outs.items():
            binding.bind_output(name, dev, idx, _ONNX_TYPE[t.dtype], tuple(t.shape), t.data_ptr())
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()


def pick_providers(device: str = "auto") -> tuple[list, torch.device]:
    available = ort.get_available_providers()
    want_cuda = device in ("auto", "cuda")
    if want_cuda and "CUDAExecutionProvider" in available and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], torch.device("cuda", 0)
    if device == "cuda":
        raise RuntimeError(
            "device 'cuda' was asked for, but onnxruntime has no CUDAExecutionProvider here "
            f"(available: {available}) or torch sees no GPU; install onnxruntime-gpu or use device 'cpu'"
        )
    return ["CPUExecutionProvider"], torch.device("cpu")


class OrtExecutor(CacheExecutor):
    def __init__(
        self,
        target_onnx: Path,
        drafter_onnx: Path,
        *,
        vocab_size: int,
        hidden_size: int,
        top_k: int,
        target_kv_len: int,
        drafter_kv_len: int,
        max_batch: int,
        device: str = "auto",
        threads: int | None = None,
        log_severity: int = 3,
        thread_pool: str = "shared",
    ):
        providers, dev = pick_providers(device)
        self.target = _Graph(Path(target_onnx), providers, dev, threads, log_severity, thread_pool)
        self.drafter = _Graph(Path(drafter_onnx), providers, dev, threads, log_severity, thread_pool)
        t, d = self.target, self.drafter

        self._tc, t_len = caches_for(t.inputs, t.static_shape, t.cache_dtype(), max_batch, dev)
        self._dc, d_len = caches_for(d.inputs, d.static_shape, d.cache_dtype(), max_batch, dev)
        problems = []
        if t_len != target_kv_len:
            problems.append(f"target.onnx cache capacity {t_len} != target_kv_len {target_kv_len}")
        if d_len != drafter_kv_len:
            problems.append(f"drafter.onnx cache capacity {d_len} != drafter_kv_len {drafter_kv_len}")
        if d.static_shape("topk_ids")[2] != top_k:
            problems.append(f"drafter.onnx top-k {d.static_shape('topk_ids')[2]} != top_k {top_k}")
        if t.static_shape("logits")[2] != vocab_size:
            problems.append(f"target.onnx vocabulary {t.static_shape('logits')[2]} != vocab_size {vocab_size}")
        if problems:
            raise ManifestError("graphs do not match the build manifest: " + "; ".join(problems) + "; rebuild")

        self.spec = ExecutorSpec(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            top_k=top_k,
            target_kv_len=target_kv_len,
            drafter_kv_len=drafter_kv_len,
            max_batch=max_batch,
            device=dev,
            feature_dtype=t.dtype("hidden"),
        )
        self._regress_dtype = d.dtype("regress")
        self._features_dtype = d.dtype("features")
        self.reset(1)

    @classmethod
    def from_build_dir(
        cls, build_dir: str | Path, max_batch: int | None = None, device: str = "auto", threads: int | None = None,
        log_severity: int = 3, thread_pool: str = "shared", **ignored
    ) -> "OrtExecutor":
        build_dir = Path(build_dir)
        m = read_manifest(build_dir)
        return cls(
            build_file(build_dir, m, "target_onnx"),
            build_file(build_dir, m, "drafter_onnx"),
            vocab_size=m["vocab_size"],
            hidden_size=m["hidden_size"],
            top_k=m["tree"]["top_k"],
            target_kv_len=m["target_kv_len"],
            drafter_kv_len=m["drafter_kv_len"],
            max_batch=max_batch or m["limits"]["max_batch"],
            device=device,
            threads=threads,
            log_severity=log_severity,
            thread_pool=thread_pool,
        )

    # -- Executor ---------------------------------------------------------------------------------

    def _ids(self, x: torch.Tensor, name: str, b: int, t: int) -> torch.Tensor:
        if tuple(x.shape) != (b, t):
            raise ValueError(f"{name} has shape {list(x.shape)}, expected [{b}, {t}]")
        return x.to(device=self.spec.device, dtype=torch.int64).contiguous()

    def _mask(self, mask: torch.Tensor, b: int, t: int, s: int) -> torch.Tensor:
        if tuple(mask.shape) != (b, t, s):
            raise ValueError(f"mask has shape {list(mask.shape)}, expected [{b}, {t}, {s}]")
        return mask.to(device=self.spec.device, dtype=torch.bool).contiguous()

    @torch.inference_mode()
    def target_step(self, tokens, positions, write_index, mask, logit_index=None):
        b, t = tokens.shape
        self._check_batch(b)
        c, dev = self._tc, self.spec.device
        feeds = {
            "tokens": self._ids(tokens, "tokens", b, t),
            "positions": self._ids(positions, "positions", b, t),
            "write_index": self._ids(write_index, "write_index", b, t),
            "mask": self._mask(mask, b, t, self.spec.target_kv_len),
        }
        self._check_writes(feeds["write_index"], c)
        in_place = isinstance(c, LayerCaches)
        if in_place:  # the graph computes logits for the asked rows only
            feeds["logit_index"] = logit_rows(logit_index, b, t, dev)
        rows = feeds["logit_index"].shape[1] if in_place else t
        logits = torch.empty(b, rows, self.spec.vocab_size, dtype=torch.float32, device=dev)
        hidden = torch.empty(b, t, self.spec.hidden_size, dtype=self.spec.feature_dtype, device=dev)
        self.target.run({**feeds, **c.inputs()}, {"logits": logits, "hidden": hidden, **c.outputs()})
        c.after_call()
        if logit_index is not None and not in_place:
            logits = logits.gather(1, logit_rows(logit_index, b, t, dev)[..., None].expand(-1, -1, logits.shape[-1]))
        return logits, hidden

    @torch.inference_mode()
    def draft_step(self, features, tokens, positions, write_index, mask):
        b, t = tokens.shape
        self._check_batch(b)
        if tuple(features.shape) != (b, t, self.spec.hidden_size):
            raise ValueError(f"features have shape {list(features.shape)}, expected [{b}, {t}, {self.spec.hidden_size}]")
        c = self._dc
        feeds = {
            "features": features.to(device=self.spec.device, dtype=self._features_dtype).contiguous(),
            "tokens": self._ids(tokens, "tokens", b, t),
            "positions": self._ids(positions, "positions", b, t),
            "write_index": self._ids(write_index, "write_index", b, t),
            "mask": self._mask(mask, b, t, self.spec.drafter_kv_len),
        }
        self._check_writes(feeds["write_index"], c)
        dev, k = self.spec.device, self.spec.top_k
        vals = torch.empty(b, t, k, dtype=torch.float32, device=dev)
        ids = torch.empty(b, t, k, dtype=torch.int64, device=dev)
        regress = torch.empty(b, t, self.spec.hidden_size, dtype=self._regress_dtype, device=dev)
        self.drafter.run({**feeds, **c.inputs()}, {"topk_logprobs": vals, "topk_ids": ids, "regress": regress, **c.outputs()})
        c.after_call()
        return vals, ids, regress
