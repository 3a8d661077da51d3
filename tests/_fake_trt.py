"""A stand-in for the TensorRT module and its engines, for unit tests of the TensorRT executor's
binding logic on a machine without TensorRT or a GPU.

Only what the executor calls exists here, with the real methods' names and parameter names
(tests/_trt_bindings_check.py compares these classes with the real ICudaEngine, IExecutionContext
and Runtime). The fake engine "runs" on host memory through the addresses it was given: a KV cache
update writes the row's new tokens into the cache output at write_index[:, 0] (what TensorRT's
KV-cache update layer does), so tests see which buffer a call really wrote.
"""
from __future__ import annotations

import ctypes
import json
from enum import Enum
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


class DataType(Enum):
    FLOAT = "float32"
    HALF = "float16"
    BF16 = "bfloat16"
    INT32 = "int32"
    INT64 = "int64"
    INT8 = "int8"
    UINT8 = "uint8"
    BOOL = "bool"
    FP8 = "float8_e4m3fn"


class TensorIOMode(Enum):
    INPUT = 1
    OUTPUT = 2


class ExecutionContextAllocationStrategy(Enum):
    STATIC = 0
    ON_PROFILE_CHANGE = 1
    USER_MANAGED = 2


class Logger:
    WARNING = 2

    def __init__(self, severity=None):
        self.severity = severity


def _host_view(address: int, shape, dtype: torch.dtype) -> torch.Tensor:
    """A torch tensor over host memory at `address` (what the engine reads and writes)."""
    n = int(np.prod(shape)) if len(shape) else 1
    nbytes = n * torch.empty((), dtype=dtype).element_size()
    raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(address))
    return torch.from_numpy(raw).view(dtype).view(tuple(shape))


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.shapes: dict[str, tuple] = {}
        self.profile = None
        self.device_memory = None
        self.launches: list[dict[str, int]] = []  # the addresses of every launch
        self.runtime_cache = None  # TensorRT-RTX: the runtime config's cache

    def set_device_memory(self, memory, size):
        self.device_memory = (memory, size)

    def set_optimization_profile_async(self, profile_index, stream_handle):
        self.profile = profile_index
        return 0 <= profile_index < self.engine.num_optimization_profiles

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.get_tensor_profile_shape(name, self.profile)
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, memory):
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle):
        self.launches.append(dict(self.addresses))
        kernel = f"{id(self.engine)}:{self.profile}"
        if self.runtime_cache is not None and kernel not in self.runtime_cache.kernels:  # compiled just in time
            self.runtime_cache.kernels.append(kernel)
        e = self.engine
        b, t = self.shapes["tokens"]
        tokens = _host_view(self.addresses["tokens"], (b, t), torch.int64)
        start = _host_view(self.addresses["write_index"], (b, t), torch.int64)[:, 0]
        for cache_in, cache_out in e.cache_pairs:
            shape = self.shapes[cache_in]  # [B, KVH, S, D], or [L, B, KVH, S, D] (copy-flavour target)
            dtype = e._torch_dtype(cache_in)
            src = _host_view(self.addresses[cache_in], shape, dtype)
            dst = _host_view(self.addresses[cache_out], shape, dtype)
            if self.addresses[cache_out] != self.addresses[cache_in]:
                dst.copy_(src)  # a copy-flavour graph returns the whole cache
            layers = dst if len(shape) == 5 else dst[None]
            for row in range(b):  # the KV-cache update: token ids stand in for keys and values
                s0 = int(start[row])
                layers[:, row, :, s0 : s0 + t, :] = tokens[row].to(dtype)[None, None, :, None]
        for name in e.outputs:
            if name not in dict(e.cache_pairs).values():
                shape = [b if d == -1 and i == 0 else (t if d == -1 else d) for i, d in enumerate(e.shapes[name])]
                if name == "logits" and "logit_index" in self.shapes:
                    shape[1] = self.shapes["logit_index"][1]
                _host_view(self.addresses[name], shape, e._torch_dtype(name)).zero_()
        return True


class FakeEngine:
    """io: {name: (mode "in"|"out", dtype name, shape with -1 on dynamic axes)}; profiles: per profile
    {input name: (min, opt, max)}; aliases: {output: input} as TensorRT reports them."""

    def __init__(self, io: dict, profiles: list[dict], aliases: dict | None = None):
        self.io = io
        self.names = list(io)
        self.outputs = [n for n, (m, _, _) in io.items() if m == "out"]
        self.shapes = {n: tuple(s) for n, (_, _, s) in io.items()}
        self.profiles = profiles
        self.aliases = aliases or {}
        ins = [n for n, (m, _, _) in io.items() if m == "in"]
        self.cache_pairs = [(n, n + "_out") for n in ins if n.startswith(("k_cache", "v_cache"))]
        self.contexts: list[FakeContext] = []

    def _torch_dtype(self, name: str) -> torch.dtype:
        return getattr(torch, self.io[name][1])

    @property
    def num_io_tensors(self):
        return len(self.names)

    @property
    def num_optimization_profiles(self):
        return len(self.profiles)

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if self.io[name][0] == "in" else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return DataType(self.io[name][1])

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def get_tensor_profile_shape(self, name, profile_index):
        return self.profiles[profile_index][name]

    def get_device_memory_size_for_profile_v2(self, profile_index):
        return 1024

    def create_execution_context(self, strategy):
        # TensorRT-RTX's overload takes an IRuntimeConfig carrying the strategy (and the runtime cache)
        config = strategy if isinstance(strategy, FakeRuntimeConfig) else None
        assert (config.strategy if config else strategy) == ExecutionContextAllocationStrategy.USER_MANAGED
        ctx = FakeContext(self)
        ctx.runtime_cache = config.cache if config else None
        self.contexts.append(ctx)
        return ctx

    def create_runtime_config(self):  # TensorRT-RTX only
        return FakeRuntimeConfig()

    def get_aliased_input_tensor(self, name):
        return self.aliases.get(name)


class FakeRuntimeCache:
    """TensorRT-RTX's runtime cache: the "kernels" compiled so far (one per launched profile)."""

    def __init__(self):
        self.kernels: list[str] = []

    def deserialize(self, blob):
        data = json.loads(bytes(blob))
        if data.get("gpu") != "fake":
            return False
        self.kernels = data["kernels"]
        return True

    def serialize(self):
        return json.dumps({"gpu": "fake", "kernels": self.kernels}).encode()


class FakeRuntimeConfig:
    def __init__(self):
        self.strategy = ExecutionContextAllocationStrategy.STATIC
        self.cache = None

    def set_execution_context_allocation_strategy(self, strategy):
        self.strategy = strategy

    def create_runtime_cache(self):
        return FakeRuntimeCache()

    def set_runtime_cache(self, cache):
        self.cache = cache
        return True


class FakeRuntime:
    """Deserializes the JSON "plan" files `write_fake_build` writes."""

    def __init__(self, logger=None):
        self.engines: dict[str, FakeEngine] = {}

    def deserialize_cuda_engine(self, serialized_engine):
        spec = json.loads(bytes(serialized_engine))
        eng = FakeEngine({k: tuple(v) for k, v in spec["io"].items()},
                         [{k: tuple(map(tuple, v)) for k, v in p.items()} for p in spec["profiles"]], spec["aliases"])
        self.engines[spec["name"]] = eng
        return eng


# TensorRT-RTX 1.7's targets (its ComputeCapability enum)
ComputeCapability = Enum("ComputeCapability", ["NONE", "CURRENT", "SM75", "SM80", "SM86", "SM89", "SM120", "SM121"])


def module() -> SimpleNamespace:
    """The parts of the `tensorrt` / `tensorrt_rtx` module the executor touches."""
    return SimpleNamespace(
        DataType=DataType, TensorIOMode=TensorIOMode, Logger=Logger, Runtime=FakeRuntime,
        ExecutionContextAllocationStrategy=ExecutionContextAllocationStrategy, ComputeCapability=ComputeCapability,
        init_libnvinfer_plugins=lambda logger, namespace: True,
    )


def write_engines_from_summaries(folder: Path, manifest: dict) -> None:
    """Fake "plans" in `folder` with the I/O, profiles and KV-cache aliases a real build's manifest read
    back from its networks (`engines`), under the manifest's engine file names."""
    for key in ("target", "drafter"):
        summary = manifest["engines"][key]
        io = {n: ("in", t["dtype"], t["shape"]) for n, t in summary["inputs"].items()}
        io.update({n: ("out", t["dtype"], t["shape"]) for n, t in summary["outputs"].items()})
        spec = {"name": key, "io": io, "profiles": summary["profiles"], "aliases": summary["aliases"]}
        (Path(folder) / manifest["files"][f"{key}_engine"]).write_text(json.dumps(spec))


def _engine_spec(name, inputs, outputs, profiles, aliases):
    io = {n: ("in", dt, s) for n, (dt, s) in inputs.items()}
    io.update({n: ("out", dt, s) for n, (dt, s) in outputs.items()})
    return {"name": name, "io": io, "profiles": profiles, "aliases": aliases}


def write_fake_build(folder: Path, *, layers=2, kvh=2, s_t=24, s_d=28, d=4, hidden=8, vocab=16, top_k=3,
                     max_batch=4, max_t=8, flavour="inplace", alias=True, library="tensorrt",
                     compute_capabilities=None) -> dict:
    """A build folder with fake target/drafter "engines" (JSON) and a manifest: what TrtExecutor reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bt = [-1, -1]

    def prof(t_lo, t_hi, caches, s):
        p = {n: ((1, t_lo), (1, t_hi), (max_batch, t_hi)) for n in ("tokens", "positions", "write_index")}
        p["mask"] = ((1, t_lo, s), (1, t_hi, s), (max_batch, t_hi, s))
        p["features"] = ((1, t_lo, hidden), (1, t_hi, hidden), (max_batch, t_hi, hidden))
        p["logit_index"] = ((1, 1), (1, t_hi), (max_batch, t_hi))
        for n, shape in caches.items():
            p[n] = tuple(tuple(max_batch if x == -1 and j == 2 else (1 if x == -1 else x) for x in shape)
                         for j in range(3))
        return p

    def cache_io(n_layers, s, name):
        if flavour == "inplace":
            ins = {f"{kv}_cache_{i}": ("float32", [-1, kvh, s, d]) for i in range(n_layers) for kv in "kv"}
        elif name == "target":
            ins = {f"{kv}_cache": ("float32", [n_layers, -1, kvh, s, d]) for kv in "kv"}
        else:
            ins = {f"{kv}_cache": ("float32", [-1, kvh, s, d]) for kv in "kv"}
        outs = {n + "_out": v for n, v in ins.items()}
        aliases = {n + "_out": n for n in ins} if flavour == "inplace" and alias else {}
        return ins, outs, aliases

    t_ins, t_outs, t_alias = cache_io(layers, s_t, "target")
    target_in = {"tokens": ("int64", bt), "positions": ("int64", bt), "write_index": ("int64", bt),
                 "mask": ("bool", [-1, -1, s_t])}
    if flavour == "inplace":
        target_in["logit_index"] = ("int64", bt)
    target_in.update(t_ins)
    target_out = {"logits": ("float32", [-1, -1, vocab]), "hidden": ("float32", [-1, -1, hidden]), **t_outs}
    shapes_t = {n: s for n, (_, s) in t_ins.items()}
    target = _engine_spec("target", target_in, target_out, [prof(1, max_t, shapes_t, s_t), prof(1, 4, shapes_t, s_t)], t_alias)

    d_ins, d_outs, d_alias = cache_io(1, s_d, "drafter")
    drafter_in = {"features": ("float32", [-1, -1, hidden]), "tokens": ("int64", bt), "positions": ("int64", bt),
                  "write_index": ("int64", bt), "mask": ("bool", [-1, -1, s_d]), **d_ins}
    drafter_out = {"topk_logprobs": ("float32", [-1, -1, top_k]), "topk_ids": ("int64", [-1, -1, top_k]),
                   "regress": ("float32", [-1, -1, hidden]), **d_outs}
    shapes_d = {n: s for n, (_, s) in d_ins.items()}
    drafter = _engine_spec("drafter", drafter_in, drafter_out, [prof(1, max_t, shapes_d, s_d)], d_alias)

    for spec in (target, drafter):
        (folder / f"{spec['name']}.plan").write_text(json.dumps(spec))
    manifest = {
        "files": {"target_engine": "target.plan", "drafter_engine": "drafter.plan"},
        "limits": {"max_batch": max_batch}, "kv_flavour": flavour, "target_kv_len": s_t, "drafter_kv_len": s_d,
        "tree": {"top_k": top_k}, "vocab_size": vocab, "hidden_size": hidden,
        "tensorrt_library": library, "compute_capabilities": compute_capabilities,
    }
    return manifest
