"""Executor running the exported ONNX graphs with onnxruntime (CPU; CUDA where its provider exists).

It proves the graphs TensorRT parses: the same `target.onnx` / `drafter.onnx`, the same static
cache capacities, the same inputs. Caches live as torch tensors bound to the graphs through IO
binding (no copies at the boundary); each graph returns its updated caches whole, written straight
into a second buffer, and the two buffers swap after every call.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import torch

from ...builders.manifest import ManifestError, build_file, read_manifest
from .base import BufferedExecutor, ExecutorSpec, KVBuffers, move_cache_slots_

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


class _Graph:
    """One ONNX graph in an onnxruntime session, fed and drained through IO binding."""

    def __init__(self, path: Path, providers: list, device: torch.device, threads: int | None = None):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
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


class OrtExecutor(BufferedExecutor):
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
    ):
        providers, dev = pick_providers(device)
        self.target = _Graph(Path(target_onnx), providers, dev, threads)
        self.drafter = _Graph(Path(drafter_onnx), providers, dev, threads)
        t, d = self.target, self.drafter

        t_shape = t.static_shape("k_cache")  # [L, batch, KVH, S, D]
        d_shape = d.static_shape("k_cache")  # [batch, KVH, S, D]
        problems = []
        if t_shape[3] != target_kv_len:
            problems.append(f"target.onnx cache capacity {t_shape[3]} != target_kv_len {target_kv_len}")
        if d_shape[2] != drafter_kv_len:
            problems.append(f"drafter.onnx cache capacity {d_shape[2]} != drafter_kv_len {drafter_kv_len}")
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
        self._tc = KVBuffers(lambda b: (t_shape[0], b, *t_shape[2:]), t.dtype("k_cache"), max_batch, dev)
        self._dc = KVBuffers(lambda b: (b, *d_shape[1:]), d.dtype("k_cache"), max_batch, dev)
        self.reset(1)

    @classmethod
    def from_build_dir(
        cls, build_dir: str | Path, max_batch: int | None = None, device: str = "auto", threads: int | None = None, **ignored
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
    def target_step(self, tokens, positions, write_index, mask):
        b, t = tokens.shape
        self._check_batch(b)
        c = self._tc
        feeds = {
            "tokens": self._ids(tokens, "tokens", b, t),
            "positions": self._ids(positions, "positions", b, t),
            "write_index": self._ids(write_index, "write_index", b, t),
            "mask": self._mask(mask, b, t, self.spec.target_kv_len),
            "k_cache": c.k,
            "v_cache": c.v,
        }
        dev = self.spec.device
        logits = torch.empty(b, t, self.spec.vocab_size, dtype=torch.float32, device=dev)
        hidden = torch.empty(b, t, self.spec.hidden_size, dtype=self.spec.feature_dtype, device=dev)
        self.target.run(feeds, {"logits": logits, "hidden": hidden, "k_cache_out": c.next_k, "v_cache_out": c.next_v})
        c.swap()
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
            "k_cache": c.k,
            "v_cache": c.v,
        }
        dev, k = self.spec.device, self.spec.top_k
        vals = torch.empty(b, t, k, dtype=torch.float32, device=dev)
        ids = torch.empty(b, t, k, dtype=torch.int64, device=dev)
        regress = torch.empty(b, t, self.spec.hidden_size, dtype=self._regress_dtype, device=dev)
        self.drafter.run(
            feeds,
            {"topk_logprobs": vals, "topk_ids": ids, "regress": regress, "k_cache_out": c.next_k, "v_cache_out": c.next_v},
        )
        c.swap()
        return vals, ids, regress

    @torch.inference_mode()
    def move_target_kv(self, src, dst):
        if src.shape != dst.shape or src.shape[0] != self.batch:
            raise ValueError(f"src {list(src.shape)} and dst {list(dst.shape)} must both be [{self.batch}, A]")
        dev = self.spec.device
        move_cache_slots_(
            (self._tc.k, self._tc.v), src.to(dev, torch.int64), dst.to(dev, torch.int64), slot_dim=3, batch_dim=1
        )
