"""Executor running the TensorRT or TensorRT-RTX engines of a build on CUDA (GPU hosts only).

Never imported on CPU paths: `make_executor("tensorrt", ...)` imports it lazily. Buffers are torch
CUDA tensors handed to TensorRT by address (`set_tensor_address`).

- Engines run on the executor's own CUDA stream, never the legacy default stream: a call makes that
  stream wait for torch's current stream (the inputs), enqueues `execute_async_v3`, and makes the
  current stream wait for it, so callers see results in stream order with no host synchronisation.
- One execution context per optimization profile (prefill / verify for the target; prefill / update /
  frontier for the drafter), all sharing one scratch allocation (they run one at a time on one
  stream); a call picks the narrowest profile whose token range holds T.
- KV caches (builders/kv_layout.py). In-place engines (TensorRT >= 10.15): one buffer per layer's K
  and V, bound to the cache input AND its output; at load every pair is checked with
  `ICudaEngine.get_aliased_input_tensor` (an engine that does not alias one is refused). Buffers are
  allocated once, so a row range keeps fixed addresses. Copy-flavour engines (older TensorRT):
  double-buffered, whole batches only.
- Draft-tree ops: when the build has the `griffin::DraftTree*` plugin engines, `tree_ops()` runs
  expand and select through them (greedy accept stays the OpenAI-Triton kernel, or the torch
  reference where triton is missing); otherwise the kernels.
- The manifest's TensorRT library and version must equal the installed one (serialized engines are
  tied to both).
- TensorRT-RTX (builders/trt_library.py): the engines' kernels are compiled just in time on the first
  run of each profile and kept in a runtime cache beside the engines (`runtime.cache`, loaded at start,
  saved after each profile's first run), so a restart does not compile them again. A GPU the engines
  were not built for (H100/H200: SM90 is not a TensorRT-RTX target) is refused in one line at load.
  Its builds have no plugin engines: the tree steps run as the OpenAI-Triton kernels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ...builders.kv_layout import cache_pairs, flavour_of
from ...builders.manifest import ManifestError, build_file, engine_library, kv_flavour, read_manifest
from ...builders.trt_library import RUNTIME_CACHE, TENSORRT, TrtLibrary, capability_name
from ...tree.ops import TreeOps, default_tree_ops
from ...tree.structure import DraftTree
from .base import CacheExecutor, ExecutorSpec, LayerCaches, caches_for, logit_rows

if TYPE_CHECKING:  # string annotations name TensorRT's classes; never imported at run time here
    import tensorrt as trt

log = logging.getLogger(__name__)


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8,
        trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool, trt.DataType.FP8: torch.float8_e4m3fn,
    }
    try:
        return table[dt]
    except KeyError:
        raise ManifestError(f"engine tensor type {dt} has no torch equivalent") from None


class _Stream:
    """The CUDA stream the engines run on (inert on CPU, where only tests run fake engines)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = torch.cuda.Stream(device) if device.type == "cuda" else None

    @property
    def handle(self) -> int:
        return self.cuda.cuda_stream if self.cuda is not None else 0

    def begin(self) -> None:
        if self.cuda is not None:
            self.cuda.wait_stream(torch.cuda.current_stream(self.device))

    def end(self) -> None:
        if self.cuda is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.cuda)

    def synchronize(self) -> None:
        if self.cuda is not None:
            self.cuda.synchronize()


@dataclass(frozen=True)
class _Profile:
    index: int
    t_min: int
    t_max: int
    b_max: int


class _RuntimeCache:
    """TensorRT-RTX's just-in-time kernels for this GPU, shared by every context and kept in a file."""

    def __init__(self, engine: "trt.ICudaEngine", path: Path):
        self.path = path
        config: "trt.IRuntimeConfig" = engine.create_runtime_config()
        self.cache: "trt.IRuntimeCache" = config.create_runtime_cache()
        if path.is_file() and not self.cache.deserialize(path.read_bytes()):
            log.warning("%s was made for another GPU, driver or TensorRT-RTX: compiling the kernels again", path)

    def save(self) -> None:
        try:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(bytes(self.cache.serialize()))
            tmp.replace(self.path)
        except OSError as e:  # a read-only build folder: the kernels are compiled again next start
            log.warning("could not save the runtime cache %s: %s", self.path, e)


class _Engine:
    """A deserialized engine with one execution context per optimization profile."""

    def __init__(self, trt, runtime: "trt.Runtime", path: Path, device: torch.device, stream: _Stream,
                 runtime_cache=None):
        """runtime_cache: TensorRT-RTX only, a callable giving the executor's shared _RuntimeCache for an engine."""
        self.trt = trt
        self.path = path
        self.device = device
        self.stream = stream
        engine: "trt.ICudaEngine" = runtime.deserialize_cuda_engine(path.read_bytes())
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

        # Token range from `tokens` ([B, T]); engines without one (the tree engines) vary only B.
        key = "tokens" if "tokens" in self.inputs else self.inputs[0]
        self.profiles: list[_Profile] = []
        for p in range(engine.num_optimization_profiles):
            lo, _opt, hi = engine.get_tensor_profile_shape(key, p)
            t_lo, t_hi = (int(lo[1]), int(hi[1])) if key == "tokens" else (1, 1)
            self.profiles.append(_Profile(p, t_lo, t_hi, int(hi[0])))
        # Narrowest first: a verify step of T = tree_size should not run in the prefill profile.
        self.by_width = sorted(self.profiles, key=lambda p: (p.t_max - p.t_min, p.index))

        # One context per profile; all share one scratch buffer sized for the largest profile.
        scratch = max(int(engine.get_device_memory_size_for_profile_v2(p.index)) for p in self.profiles)
        self.scratch = torch.empty(max(scratch, 1), dtype=torch.uint8, device=device)
        self.runtime_cache = runtime_cache(engine) if runtime_cache is not None else None
        self.first_runs: set[int] = set()  # profiles whose kernels were compiled (TensorRT-RTX)
        self.contexts = []
        for p in self.profiles:
            ctx = self._context()
            if ctx is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {path.name}")
            ctx.set_device_memory(self.scratch.data_ptr(), self.scratch.numel())
            if not ctx.set_optimization_profile_async(p.index, stream.handle):
                raise RuntimeError(f"{path.name}: could not select optimization profile {p.index}")
            self.contexts.append(ctx)
        stream.synchronize()

    def _context(self) -> "trt.IExecutionContext":
        strategy = self.trt.ExecutionContextAllocationStrategy.USER_MANAGED
        if self.runtime_cache is None:
            return self.engine.create_execution_context(strategy)
        config: "trt.IRuntimeConfig" = self.engine.create_runtime_config()
        config.set_execution_context_allocation_strategy(strategy)
        config.set_runtime_cache(self.runtime_cache.cache)
        return self.engine.create_execution_context(config)

    @property
    def max_batch(self) -> int:
        return min(p.b_max for p in self.profiles)

    def cache_dtype(self) -> torch.dtype:
        return self.dtypes[next(n for n in self.inputs if n.startswith("k_cache"))]

    def pick(self, b: int, t: int) -> int:
        for p in self.by_width:
            if p.t_min <= t <= p.t_max and b <= p.b_max:
                return p.index
        ranges = ", ".join(f"T {p.t_min}..{p.t_max}, B <= {p.b_max}" for p in self.profiles)
        raise ValueError(f"{self.path.name}: no optimization profile takes B={b}, T={t} (profiles: {ranges})")

    def check_in_place(self, pairs: list[tuple[str, str]]) -> None:
        """Refuse an engine whose cache outputs are not aliased to their inputs."""
        from ...builders.tensorrt_engine import alias_problems

        wrong = alias_problems(self.engine, pairs)
        if wrong:
            raise ManifestError(
                f"{self.path.name}: TensorRT does not update these KV caches in place ({'; '.join(wrong)}); binding "
                "one buffer to both would be undefined. Rebuild (`griffin-trt build --kv-flavour copy` on TensorRT "
                "versions that do not lower TensorScatter to the KV-cache update layer)"
            )

    def run(self, feeds: dict[str, torch.Tensor], outs: dict[str, torch.Tensor], b: int, t: int = 1) -> None:
        profile = self.pick(b, t)
        ctx: "trt.IExecutionContext" = self.contexts[profile]
        for name, x in feeds.items():
            if not ctx.set_input_shape(name, tuple(x.shape)):
                raise ValueError(f"{self.path.name}: input {name} of shape {list(x.shape)} is out of the profile")
            ctx.set_tensor_address(name, x.data_ptr())
        for name, x in outs.items():
            ctx.set_tensor_address(name, x.data_ptr())
        self.stream.begin()
        ok = ctx.execute_async_v3(self.stream.handle)
        self.stream.end()
        if not ok:
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed (see the TensorRT log)")
        if self.runtime_cache is not None and profile not in self.first_runs:
            self.first_runs.add(profile)
            self.stream.synchronize()  # the kernels are compiled once the run is done
            self.runtime_cache.save()

    def batch_outputs(self, b: int) -> dict[str, torch.Tensor]:
        """Output buffers of an engine whose only dynamic axis is the leading batch axis."""
        return {n: torch.empty((b, *self.shapes[n][1:]), dtype=self.dtypes[n], device=self.device) for n in self.outputs}


def unsupported_gpu(trt, library: TrtLibrary, manifest: dict, name: str, capability: tuple[int, int]) -> str | None:
    """Why the engines cannot run on this GPU (one line), or None. Datacenter TensorRT engines are built on
    their GPU; TensorRT-RTX engines run on the compute capabilities they were built for."""
    if not library.compute_capabilities:
        return None
    cap = f"{capability[0]}.{capability[1]}"
    built_for = manifest.get("compute_capabilities")
    targets = built_for or [m[2:-1] + "." + m[-1] for m in trt.ComputeCapability.__members__ if m.startswith("SM")]
    if capability_name(cap) in trt.ComputeCapability.__members__ and (not built_for or cap in built_for):
        return None
    if capability_name(cap) not in trt.ComputeCapability.__members__:
        return (f"{library.label} does not run on {name} (compute capability {cap}; it supports "
                f"{', '.join(targets)}): build this deployment with `--backend tensorrt` for this GPU")
    return (f"these {library.label} engines were built for compute capability {', '.join(targets)}, not {name} "
            f"({cap}): add \"{cap}\" to [build] compute_capabilities and rebuild")


def _load_plugins(trt, logger, manifest: dict) -> None:
    """TensorRT's own plugins, and ours where the build's engines hold them: TensorRT must find the
    plugin creators to deserialize (AOT engines then launch the stored PTX without Python)."""
    if not engine_library(manifest).plugins:
        return
    trt.init_libnvinfer_plugins(logger, "")
    files = manifest["files"]
    if not (files.get("tree_expand_engine") or files.get("tree_finalize_engine")):
        return
    from ...tree import trt_plugin

    try:
        trt_plugin.load_plugin()
    except trt_plugin.PluginUnavailable as e:
        raise ManifestError(f"this build's draft-tree engines need the griffin plugins, which cannot register: {e}") from e


class TrtExecutor(CacheExecutor):
    # Checking that every write is one contiguous run costs a host sync on CUDA; the onnxruntime
    # executor checks it on every call in CI, where the loop runs over the same graphs.
    verify_writes = False

    def __init__(
        self,
        build_dir: Path,
        manifest: dict,
        max_batch: int | None = None,
        device: str | None = None,
        *,
        trt=None,
        runtime=None,
        gpu: tuple[str, tuple[int, int]] | None = None,
    ):
        """The library comes from the manifest (`tensorrt_library`). `trt` / `runtime` default to the real
        library (CUDA required); tests pass fakes (any device) and `gpu` = (name, compute capability)."""
        library = engine_library(manifest)
        if trt is None:
            trt = library.load()
            if not torch.cuda.is_available():
                raise RuntimeError(f"the {library.backend} back end needs a CUDA GPU, and torch sees none")
        dev = torch.device(device if device and device != "auto" else "cuda")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if gpu is None and dev.type == "cuda":
            gpu = (torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev))
        problem = unsupported_gpu(trt, library, manifest, *gpu) if gpu is not None else None
        if problem:
            raise ManifestError(problem)
        self.build_dir = Path(build_dir)
        self.manifest = manifest
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        _load_plugins(trt, self.logger, manifest)
        self.runtime = runtime if runtime is not None else trt.Runtime(self.logger)
        self.stream = _Stream(dev)
        self.runtime_cache = None

        def engine(key):
            path = build_file(build_dir, manifest, key)
            if path is None:
                return None
            return _Engine(trt, self.runtime, path, dev, self.stream, self._runtime_cache if library.runtime_cache else None)

        t, d = engine("target_engine"), engine("drafter_engine")
        self.target, self.drafter = t, d
        self.tree_expand, self.tree_finalize = engine("tree_expand_engine"), engine("tree_finalize_engine")

        engine_batch = min(t.max_batch, d.max_batch)
        mb = max_batch or manifest["limits"]["max_batch"]
        if mb > engine_batch:
            raise ValueError(f"max_batch {mb} exceeds the engines' profiles (built for at most {engine_batch}); rebuild")
        flavour = kv_flavour(manifest)
        for e in (t, d):
            if flavour_of(e.inputs) != flavour:
                raise ManifestError(f"{e.path.name} has {flavour_of(e.inputs)}-flavour KV caches but the manifest says "
                                    f"{flavour}; rebuild")
            if flavour == "inplace":
                e.check_in_place(cache_pairs(e.inputs))
        self._tc, t_len = caches_for(t.inputs, lambda n: t.shapes[n], t.cache_dtype(), mb, dev)
        self._dc, d_len = caches_for(d.inputs, lambda n: d.shapes[n], d.cache_dtype(), mb, dev)
        problems = []
        if t_len != manifest["target_kv_len"]:
            problems.append(f"target engine cache capacity {t_len} != target_kv_len {manifest['target_kv_len']}")
        if d_len != manifest["drafter_kv_len"]:
            problems.append(f"drafter engine cache capacity {d_len} != drafter_kv_len {manifest['drafter_kv_len']}")
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
        self.reset(1)

    def _runtime_cache(self, engine: "trt.ICudaEngine") -> _RuntimeCache:
        if self.runtime_cache is None:
            self.runtime_cache = _RuntimeCache(engine, self.build_dir / RUNTIME_CACHE)
        return self.runtime_cache

    @classmethod
    def from_build_dir(
        cls, build_dir: str | Path, max_batch: int | None = None, device: str | None = None,
        backend: str = TENSORRT.backend, **ignored
    ) -> "TrtExecutor":
        build_dir = Path(build_dir)
        # refuses engines of another TensorRT library or version, clearly
        manifest = read_manifest(build_dir, backend=backend)
        return cls(build_dir, manifest, max_batch=max_batch, device=device)

    # -- Executor ---------------------------------------------------------------------------------

    def _in(self, x: torch.Tensor, eng: _Engine, name: str, shape: tuple) -> torch.Tensor:
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} has shape {list(x.shape)}, expected {list(shape)}")
        return x.to(device=self.spec.device, dtype=eng.dtypes[name]).contiguous()

    def _out(self, eng: _Engine, name: str, shape: tuple) -> torch.Tensor:
        return torch.empty(shape, dtype=eng.dtypes[name], device=self.spec.device)

    @torch.inference_mode()
    def target_step(self, tokens, positions, write_index, mask, logit_index=None):
        b, t = tokens.shape
        self._check_batch(b)
        e, c = self.target, self._tc
        feeds = {
            "tokens": self._in(tokens, e, "tokens", (b, t)),
            "positions": self._in(positions, e, "positions", (b, t)),
            "write_index": self._in(write_index, e, "write_index", (b, t)),
            "mask": self._in(mask, e, "mask", (b, t, self.spec.target_kv_len)),
        }
        self._check_writes(feeds["write_index"], c)
        in_place = isinstance(c, LayerCaches)
        if in_place:  # the engine computes logits for the asked rows only
            feeds["logit_index"] = logit_rows(logit_index, b, t, self.spec.device)
        rows = feeds["logit_index"].shape[1] if in_place else t
        logits = self._out(e, "logits", (b, rows, self.spec.vocab_size))
        hidden = self._out(e, "hidden", (b, t, self.spec.hidden_size))
        e.run({**feeds, **c.inputs()}, {"logits": logits, "hidden": hidden, **c.outputs()}, b, t)
        c.after_call()
        if logit_index is not None and not in_place:
            rows_idx = logit_rows(logit_index, b, t, self.spec.device)
            logits = logits.gather(1, rows_idx[..., None].expand(-1, -1, logits.shape[-1]))
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
        }
        self._check_writes(feeds["write_index"], c)
        vals = self._out(e, "topk_logprobs", (b, t, k))
        ids = self._out(e, "topk_ids", (b, t, k))
        regress = self._out(e, "regress", (b, t, self.spec.hidden_size))
        e.run({**feeds, **c.inputs()}, {"topk_logprobs": vals, "topk_ids": ids, "regress": regress, **c.outputs()}, b, t)
        c.after_call()
        return vals.float(), ids.long(), regress

    # -- draft-tree ops through the plugin engines ---------------------------------------------------

    def tree_ops(self) -> TreeOps:
        """expand / select through the `griffin::DraftTree*` plugin engines when the build has them;
        greedy accept (and everything when it has not) from the default ops (OpenAI-Triton kernels)."""
        base = default_tree_ops(self.spec.device)
        if self.tree_expand is None or self.tree_finalize is None:
            return base
        return TreeOps("tensorrt-plugin", self._plugin_expand, self._plugin_select, base.greedy_accept)

    def _tree_feeds(self, e: _Engine, names, tensors) -> dict[str, torch.Tensor]:
        feeds = {}
        for name, x in zip(names, tensors):
            want = (x.shape[0], *e.shapes[name][1:])
            feeds[name] = self._in(x, e, name, want)
        return feeds

    @torch.inference_mode()
    def _plugin_expand(self, scores, child_logp, child_ids, k):
        e = self.tree_expand
        if k != e.shapes["next_ids"][1]:
            raise ValueError(f"the expand engine keeps top-{e.shapes['next_ids'][1]}, asked for {k}")
        b = scores.shape[0]
        feeds = self._tree_feeds(e, ("scores", "child_logp", "child_ids"), (scores, child_logp, child_ids))
        outs = e.batch_outputs(b)
        e.run(feeds, outs, b)
        return tuple(outs[n] for n in ("cand_scores", "cand_ids", "next_scores", "next_ids", "next_flat"))

    @torch.inference_mode()
    def _plugin_select(self, root, cand_scores, cand_ids, cand_parents, cand_depths, total_tokens, max_depth):
        e = self.tree_finalize
        if (total_tokens, max_depth + 1) != (e.shapes["tokens"][1], e.shapes["retrieve"][2]):
            raise ValueError(f"the finalize engine was built for total_tokens {e.shapes['tokens'][1]} and max_depth "
                             f"{e.shapes['retrieve'][2] - 1}, asked for {total_tokens} and {max_depth}")
        b = cand_scores.shape[0]
        feeds = self._tree_feeds(e, ("root", "cand_scores", "cand_ids", "cand_parents", "cand_depths"),
                                 (root, cand_scores, cand_ids, cand_parents, cand_depths))
        outs = e.batch_outputs(b)
        e.run(feeds, outs, b)
        return DraftTree(*(outs[n] for n in ("tokens", "parents", "depths", "mask", "retrieve", "num_leaves")))
