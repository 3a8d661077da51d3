"""Executor running the TensorRT engines of a build on CUDA (GPU hosts with TensorRT only).

Never imported on CPU paths: `make_executor("tensorrt", ...)` imports it lazily. Buffers are torch
CUDA tensors handed to TensorRT by address (`set_tensor_address`); engines run with
`execute_async_v3` on torch's current stream, so no host synchronisation happens inside a step.

- One execution context per optimization profile (prefill / verify for the target; prefill /
  update / frontier for the drafter), all sharing one scratch allocation (they run one at a time on
  one stream); a call picks the narrowest profile whose token range holds T.
- KV caches are allocated once at max_batch. Where the engine declares an output aliased to its
  cache input (`get_aliased_input_tensor`), both addresses point at the same buffer and the cache is
  updated in place; otherwise the engine writes the whole cache into a second buffer and the two
  swap after the call.
- The manifest's TensorRT version must equal the installed one (serialized engines are tied to it).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ...builders.manifest import ManifestError, build_file, check_tensorrt_version, read_manifest
from .base import BufferedExecutor, ExecutorSpec, KVBuffers, move_cache_slots_

log = logging.getLogger(__name__)

PLUGIN_MODULE = "griffin_trt.tree.trt_plugin"


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    for name, tdt in (("BF16", torch.bfloat16), ("INT64", torch.int64), ("UINT8", torch.uint8),
                      ("FP8", getattr(torch, "float8_e4m3fn", None))):
        if hasattr(trt.DataType, name) and tdt is not None:
            table[getattr(trt.DataType, name)] = tdt
    try:
        return table[dt]
    except KeyError:
        raise ManifestError(f"engine tensor type {dt} has no torch equivalent") from None


@dataclass(frozen=True)
class _Profile:
    index: int
    t_min: int
    t_max: int
    b_max: int


class _Engine:
    """A deserialized engine with one execution context per optimization profile."""

    def __init__(self, trt, runtime, path: Path, device: torch.device):
        self.trt = trt
        self.path = path
        self.device = device
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ManifestError(
                f"TensorRT could not load {path} (built for another TensorRT version or GPU?); rebuild it"
            )
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, engine.get_tensor_dtype(n)) for n in names}
        self.shapes = {n: tuple(engine.get_tensor_shape(n)) for n in names}  # -1 on dynamic axes

        self.profiles: list[_Profile] = []
        for p in range(engine.num_optimization_profiles):
            lo, _opt, hi = engine.get_tensor_profile_shape("tokens", p)
            self.profiles.append(_Profile(p, int(lo[1]), int(hi[1]), int(hi[0])))
        # Narrowest first: a verify step of T = tree_size should not run in the prefill profile.
        self.by_width = sorted(self.profiles, key=lambda p: (p.t_max - p.t_min, p.index))

        # In-place cache update where the engine declares the alias.
        getter = getattr(engine, "get_aliased_input_tensor", None)
        self.aliased = {}
        for out in ("k_cache_out", "v_cache_out"):
            src = getter(out) if getter else None
            if src:
                self.aliased[out] = src

        # One context per profile; all share one scratch buffer sized for the largest profile.
        user = getattr(trt, "ExecutionContextAllocationStrategy", None)
        sizes = []
        for p in self.profiles:
            f = getattr(engine, "get_device_memory_size_for_profile_v2", None) or getattr(
                engine, "get_device_memory_size_for_profile", None
            )
            sizes.append(int(f(p.index)) if f else 0)
        scratch = max(sizes + [int(getattr(engine, "device_memory_size_v2", 0) or getattr(engine, "device_memory_size", 0))])
        self.scratch = torch.empty(max(scratch, 1), dtype=torch.uint8, device=device)
        stream = torch.cuda.current_stream(device).cuda_stream
        self.contexts = []
        for p in self.profiles:
            if user is not None:
                ctx = engine.create_execution_context(user.USER_MANAGED)
                if hasattr(ctx, "set_device_memory"):
                    ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
                else:
                    ctx.device_memory = self.scratch.data_ptr()
            else:
                ctx = engine.create_execution_context_without_device_memory()
                ctx.device_memory = self.scratch.data_ptr()
            if ctx is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {path.name}")
            if not ctx.set_optimization_profile_async(p.index, stream):
                raise RuntimeError(f"{path.name}: could not select optimization profile {p.index}")
            self.contexts.append(ctx)
        torch.cuda.current_stream(device).synchronize()

    @property
    def max_batch(self) -> int:
        return min(p.b_max for p in self.profiles)

    def pick(self, b: int, t: int) -> int:
        for p in self.by_width:
            if p.t_min <= t <= p.t_max and b <= p.b_max:
                return p.index
        ranges = ", ".join(f"T {p.t_min}..{p.t_max}, B <= {p.b_max}" for p in self.profiles)
        raise ValueError(f"{self.path.name}: no optimization profile takes B={b}, T={t} (profiles: {ranges})")

    def run(self, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor]) -> None:
        b, t = feeds["tokens"].shape
        ctx = self.contexts[self.pick(b, t)]
        for name, x in feeds.items():
            if not ctx.set_input_shape(name, tuple(x.shape)):
                raise ValueError(f"{self.path.name}: input {name} of shape {list(x.shape)} is out of the profile")
            ctx.set_tensor_address(name, x.data_ptr())
        for name, x in outs.items():
            ctx.set_tensor_address(name, x.data_ptr())
        stream = torch.cuda.current_stream(self.device).cuda_stream
        if not ctx.execute_async_v3(stream):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")


def _load_plugins(trt, logger, build_dir: Path, manifest: dict) -> None:
    trt.init_libnvinfer_plugins(logger, "")
    lib = build_file(build_dir, manifest, "plugin")
    if lib is not None:
        trt.get_plugin_registry().load_library(str(lib))
    try:
        mod = importlib.import_module(PLUGIN_MODULE)
    except ImportError:
        return
    for fn_name in ("load_plugin", "register"):  # Python plugins: needed for JIT-built engines
        fn = getattr(mod, fn_name, None)
        if callable(fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - engines without plugin layers do not need them
                log.info("draft-tree plugins not loaded: %s", e)
            break


class TrtExecutor(BufferedExecutor):
    def __init__(self, build_dir: Path, manifest: dict, max_batch: int | None = None, device: str | None = None):
        import tensorrt as trt

        if not torch.cuda.is_available():
            raise RuntimeError("the tensorrt back end needs a CUDA GPU, and torch sees none")
        dev = torch.device(device if device and device not in ("auto",) else "cuda")
        if dev.type != "cuda":
            raise RuntimeError(f"the tensorrt back end runs on CUDA, not {dev}")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.build_dir = Path(build_dir)
        self.manifest = manifest
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        _load_plugins(trt, self.logger, self.build_dir, manifest)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(dev):
            self.target = _Engine(trt, self.runtime, build_file(build_dir, manifest, "target_engine"), dev)
            self.drafter = _Engine(trt, self.runtime, build_file(build_dir, manifest, "drafter_engine"), dev)
        t, d = self.target, self.drafter

        engine_batch = min(t.max_batch, d.max_batch)
        mb = max_batch or manifest["limits"]["max_batch"]
        if mb > engine_batch:
            raise ValueError(f"max_batch {mb} exceeds the engines' profiles (built for at most {engine_batch}); rebuild")
        t_shape, d_shape = t.shapes["k_cache"], d.shapes["k_cache"]  # [L, -1, KVH, S, D], [-1, KVH, S, D]
        problems = []
        if t_shape[3] != manifest["target_kv_len"]:
            problems.append(f"target engine cache capacity {t_shape[3]} != target_kv_len {manifest['target_kv_len']}")
        if d_shape[2] != manifest["drafter_kv_len"]:
            problems.append(f"drafter engine cache capacity {d_shape[2]} != drafter_kv_len {manifest['drafter_kv_len']}")
        if d.shapes["topk_ids"][2] != manifest["tree"]["top_k"]:
            problems.append(f"drafter engine top-k {d.shapes['topk_ids'][2]} != top_k {manifest['tree']['top_k']}")
        if problems:
            raise ManifestError("engines do not match the build manifest: " + "; ".join(problems) + "; rebuild")

        self.spec = ExecutorSpec(
            vocab_size=manifest["vocab_size"],
            hidden_size=manifest["hidden_size"],
            top_k=manifest["tree"]["top_k"],
            target_kv_len=manifest["target_kv_len"],
            drafter_kv_len=manifest["drafter_kv_len"],
            max_batch=mb,
            device=dev,
            feature_dtype=t.dtypes["hidden"],
        )
        in_place_t = t.aliased.get("k_cache_out") == "k_cache" and t.aliased.get("v_cache_out") == "v_cache"
        in_place_d = d.aliased.get("k_cache_out") == "k_cache" and d.aliased.get("v_cache_out") == "v_cache"
        self._tc = KVBuffers(lambda b: (t_shape[0], b, *t_shape[2:]), t.dtypes["k_cache"], mb, dev, in_place_t)
        self._dc = KVBuffers(lambda b: (b, *d_shape[1:]), d.dtypes["k_cache"], mb, dev, in_place_d)
        self.reset(1)

    @classmethod
    def from_build_dir(
        cls, build_dir: str | Path, max_batch: int | None = None, device: str | None = None, **ignored
    ) -> "TrtExecutor":
        build_dir = Path(build_dir)
        manifest = read_manifest(build_dir)
        check_tensorrt_version(manifest, build_dir)  # refuses engines of another TensorRT, clearly
        return cls(build_dir, manifest, max_batch=max_batch, device=device)

    # -- Executor ---------------------------------------------------------------------------------

    def _in(self, x: torch.Tensor, eng: _Engine, name: str, shape: tuple) -> torch.Tensor:
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} has shape {list(x.shape)}, expected {list(shape)}")
        return x.to(device=self.spec.device, dtype=eng.dtypes[name]).contiguous()

    def _out(self, eng: _Engine, name: str, shape: tuple) -> torch.Tensor:
        return torch.empty(shape, dtype=eng.dtypes[name], device=self.spec.device)

    @torch.inference_mode()
    def target_step(self, tokens, positions, write_index, mask):
        b, t = tokens.shape
        self._check_batch(b)
        e, c = self.target, self._tc
        feeds = {
            "tokens": self._in(tokens, e, "tokens", (b, t)),
            "positions": self._in(positions, e, "positions", (b, t)),
            "write_index": self._in(write_index, e, "write_index", (b, t)),
            "mask": self._in(mask, e, "mask", (b, t, self.spec.target_kv_len)),
            "k_cache": c.k,
            "v_cache": c.v,
        }
        logits = self._out(e, "logits", (b, t, self.spec.vocab_size))
        hidden = self._out(e, "hidden", (b, t, self.spec.hidden_size))
        e.run(feeds, {"logits": logits, "hidden": hidden, "k_cache_out": c.next_k, "v_cache_out": c.next_v})
        c.swap()
        return logits.float(), hidden

    @torch.inference_mode()
    def draft_step(self, features, tokens, positions, write_index, mask):
        b, t = tokens.shape
        self._check_batch(b)
        e, c, k = self.drafter, self._dc, self.spec.top_k
        feeds = {
            "features": self._in(features, e, "features", (b, t, self.spec.hidden_size)),
            "tokens": self._in(tokens, e, "tokens", (b, t)),
            "positions": self._in(positions, e, "positions", (b, t)),
            "write_index": self._in(write_index, e, "write_index", (b, t)),
            "mask": self._in(mask, e, "mask", (b, t, self.spec.drafter_kv_len)),
            "k_cache": c.k,
            "v_cache": c.v,
        }
        vals = self._out(e, "topk_logprobs", (b, t, k))
        ids = self._out(e, "topk_ids", (b, t, k))
        regress = self._out(e, "regress", (b, t, self.spec.hidden_size))
        e.run(
            feeds,
            {"topk_logprobs": vals, "topk_ids": ids, "regress": regress, "k_cache_out": c.next_k, "v_cache_out": c.next_v},
        )
        c.swap()
        return vals.float(), ids.long(), regress

    @torch.inference_mode()
    def move_target_kv(self, src, dst):
        if src.shape != dst.shape or src.shape[0] != self.batch:
            raise ValueError(f"src {list(src.shape)} and dst {list(dst.shape)} must both be [{self.batch}, A]")
        dev = self.spec.device
        move_cache_slots_(
            (self._tc.k, self._tc.v), src.to(dev, torch.int64), dst.to(dev, torch.int64), slot_dim=3, batch_dim=1
        )
