"""Checks of our TensorRT code against the REAL TensorRT Python bindings of one version.

Run in a subprocess whose PYTHONPATH starts with a folder from `scripts/trt_bindings.py` (real
extension module over stub libraries): `python tests/_trt_bindings_check.py` prints a JSON report
{check: {"ok": bool, "detail": str}}. tests/test_trt_bindings.py drives it per version.

The TensorRT and `tensorrt.plugin` code that runs here is the real one. What only libnvinfer could
supply is stood in by plain Python, and nothing else: the C++ plugin registry (a dict), and what the
builder hands a plugin while it builds: the symbolic-shape builder (IExprBuilder / IDimensionExpr
as Python integer expressions evaluated for concrete sizes), the DimsExprs container and the
ISymExpr adapter that carries a kernel's extra scalar arguments to C++.
"""
from __future__ import annotations

import importlib
import json
import operator
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import tensorrt as trt  # noqa: E402  (the real bindings)

CHECKS: dict = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


# ------------------------------------------------------------------------------ stand-ins


class FakeRegistry:
    """Stands in for TensorRT's C++ plugin registry (what `trt.get_plugin_registry()` returns)."""

    def __init__(self):
        self.creators: dict[tuple[str, str, str], object] = {}

    def register_creator(self, creator, namespace: str) -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return self.creators.get((name, version, namespace))

    @property
    def all_creators(self):
        return list(self.creators.values())


REGISTRY = FakeRegistry()
trt.get_plugin_registry = lambda: REGISTRY


class Dim:
    """A symbolic integer standing in for trt.IDimensionExpr: a function of the input sizes."""

    __class__ = property(lambda self: trt.IDimensionExpr)  # tensorrt.plugin checks isinstance(x, IDimensionExpr)

    def __init__(self, fn, const=None):
        self.fn, self.const = fn, const

    def is_constant(self) -> bool:
        return self.const is not None

    def get_constant_value(self) -> int:
        return self.const

    def is_size_tensor(self) -> bool:
        return False

    def __call__(self, env: dict) -> int:
        return self.fn(env)


def sym(name: str) -> Dim:
    return Dim(lambda env: env[name])


def _ops():
    O = trt.DimensionOperation
    return {
        O.SUM: operator.add, O.SUB: operator.sub, O.PROD: operator.mul, O.FLOOR_DIV: operator.floordiv,
        O.CEIL_DIV: lambda a, b: -(-a // b), O.MAX: max, O.MIN: min,
        O.EQUAL: lambda a, b: int(a == b), O.LESS: lambda a, b: int(a < b),
    }


class ExprBuilder:
    """Stands in for trt.IExprBuilder (constant / operation) over Dim."""

    def __init__(self):
        self.ops = _ops()

    def constant(self, v: int) -> Dim:
        return Dim(lambda env, v=v: v, const=int(v))

    def operation(self, op, a: Dim, b: Dim) -> Dim:
        f = self.ops[op]
        if a.is_constant() and b.is_constant():
            return self.constant(f(a.const, b.const))
        return Dim(lambda env: f(a(env), b(env)))


class SymExprCarrier:
    """Stands in for tensorrt.plugin's ISymExpr adapter (whose C++ setter takes only real expressions)."""

    def __init__(self, expr):
        self.expr = expr._expr
        self.kind = type(expr).__name__


def _plugin_internals():
    import tensorrt.plugin as trtp

    tensor_mod = sys.modules[trtp.SymInt32.__module__]
    tensor_mod.SymExprImpl = SymExprCarrier
    trt.DimsExprs = lambda n: [None] * n  # the container TensorRT reads output shapes from
    return trtp


# ------------------------------------------------------------------------------ helpers


def _graph_nodes():
    """Our plugin graphs for the demo tree (top_k 10, depth 5, 60 tokens), as the build writes them."""
    import tempfile

    import onnx

    from griffin_trt.builders.draft_tree_onnx import build_tree_graphs

    with tempfile.TemporaryDirectory() as tmp:
        paths = build_tree_graphs(tmp, top_k=10, total_tokens=60, max_depth=6)
        return {k: onnx.load(str(p)) for k, p in paths.items()}


def _create_like_parser(model, prefer):
    """What TensorRT's ONNX parser does with a plugin node: INT32 fields from the node's int
    attributes, the creator found by op type / plugin_version / plugin_namespace, create_plugin at
    the BUILD phase with the network's PREFER_* flag as the quick-plugin creation request."""
    from onnx import helper

    (node,) = model.graph.node
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ns, version = attrs.pop("plugin_namespace").decode(), attrs.pop("plugin_version").decode()
    fields = [trt.PluginField(k, np.array([v], dtype=np.int32), trt.PluginFieldType.INT32) for k, v in attrs.items()]
    creator = REGISTRY.get_creator(node.op_type, version, ns)
    assert creator is not None, f"no creator registered for {ns}::{node.op_type} v{version}"
    req = {"aot": trt.QuickPluginCreationRequest.PREFER_AOT, "jit": trt.QuickPluginCreationRequest.PREFER_JIT}[prefer]
    plg = creator.create_plugin(node.op_type, ns, trt.PluginFieldCollection(fields), trt.TensorRTPhase.BUILD, req)
    return node, attrs, creator, plg


TRT_OF = {torch.float32: "float32", torch.float16: "float16", torch.int64: "int64", torch.int32: "int32",
          torch.bool: "bool"}


def _trt_dtype(t: torch.dtype):
    return getattr(trt, TRT_OF[t])


def _expand_case(b, f, c, k, id_dtype=torch.int64):
    from griffin_trt.tree import expand_frontier

    g = torch.Generator().manual_seed(0)
    ins = (torch.randn(b, f, generator=g), torch.randn(b, f, c, generator=g).clamp(max=0),
           torch.randint(0, 100, (b, f, c), generator=g).to(id_dtype))
    return ins, expand_frontier(*ins, k)


def _finalize_case(b, k, depth, total):
    import _tree_kernel_cases as cases

    from griffin_trt.tree import select_tree

    args = cases.draft(b, k, depth, torch.Generator().manual_seed(1), vocab=50)
    ref = select_tree(*args, total, depth)
    return args, [ref.tokens, ref.parents, ref.depths, ref.mask, ref.retrieve, ref.num_leaves]


def _output_shapes(plg, in_dtypes, in_dims):
    """Run the plugin's own dtype and shape functions as the builder does; returns (dtypes, exprs)."""
    dtypes = plg.get_output_data_types(list(in_dtypes), [len(d) for d in in_dims])
    exprs = plg.get_output_shapes(in_dims, [], ExprBuilder())
    return dtypes, exprs


# ------------------------------------------------------------------------------ checks


@check
def register_plugins():
    """Our module registers both plugins through the real tensorrt.plugin (only the registry faked)."""
    from griffin_trt.tree import trt_plugin

    trt_plugin.load_plugin()
    trtp = importlib.import_module("tensorrt.plugin")
    qdp = sys.modules[trtp.register.__module__].QDP_REGISTRY
    for pid in (trt_plugin.EXPAND_ID, trt_plugin.FINALIZE_ID):
        d = qdp[pid]
        assert d.aot_impl_func is not None and d.impl_func is not None, pid
    names = sorted(k[0] for k in REGISTRY.creators)
    assert names == ["DraftTreeExpand", "DraftTreeFinalize"], names
    assert trt_plugin.plugin_creator_names() == ["DraftTreeExpand", "DraftTreeFinalize"]
    return f"registered {names}; network flags {trt_plugin.network_flags('aot')}"


@check
def create_like_the_onnx_parser():
    """PREFER_AOT with INT32 fields from our graphs gives AOT plugins whose attributes are Python ints."""
    register_plugins()
    out = []
    for kind, model in _graph_nodes().items():
        node, attrs, _, plg = _create_like_parser(model, "aot")
        assert isinstance(plg, trt.IPluginV3QuickAOTBuild), type(plg).__mro__
        assert plg.attrs == attrs and all(type(v) is int for v in plg.attrs.values()), (plg.attrs, attrs)
        assert list(plg.attrs) == list(attrs)  # positional order aot_impl receives them in
        out.append(f"{node.op_type}{attrs}")
    return "; ".join(out)


@check
def output_dtypes_and_shapes():
    """The plugins' output dtypes and symbolic shapes equal the torch reference's at concrete sizes."""
    _plugin_internals()
    register_plugins()
    graphs = _graph_nodes()
    notes = []
    _, attrs, _, plg = _create_like_parser(graphs["expand"], "aot")
    k = attrs["top_k"]
    for b, f, c in ((1, k, k), (3, k, k), (2, 4, 7)):
        for id_dtype in (torch.int64, torch.int32):
            (s, lp, ids), ref = _expand_case(b, f, c, min(k, f * c), id_dtype)
            if f * c < k:
                continue
            dims = [[sym("B"), sym("F")], [sym("B"), sym("F"), sym("C")], [sym("B"), sym("F"), sym("C")]]
            dtypes, exprs = _output_shapes(plg, [_trt_dtype(x.dtype) for x in (s, lp, ids)], dims)
            env = {"B": b, "F": f, "C": c}
            got = [tuple(e(env) for e in shape) for shape in exprs]
            assert got == [tuple(r.shape) for r in ref], (got, [tuple(r.shape) for r in ref])
            # scores keep their float type, every integer output takes the ids' type
            want = [_trt_dtype(ref[0].dtype)] + [_trt_dtype(id_dtype)] + [_trt_dtype(ref[2].dtype)] + [_trt_dtype(id_dtype)] * 2
            assert list(dtypes) == want, (dtypes, want)
            if id_dtype == torch.int64:
                assert list(dtypes) == [_trt_dtype(r.dtype) for r in ref]
    notes.append(f"expand top_k={k}: B,F,C in (1,{k},{k}) (3,{k},{k}) (2,4,7); int64 and int32 ids")
    _, attrs, _, plg = _create_like_parser(graphs["finalize"], "aot")
    total, max_depth = attrs["total_tokens"], attrs["max_depth"]
    n_graph = graphs["finalize"].graph.input[1].type.tensor_type.shape.dim[1].dim_value
    for b in (1, 2):
        args, ref = _finalize_case(b, 10, max_depth, total)
        assert args[1].shape[1] == n_graph, (args[1].shape, n_graph)
        dims = [[sym("B")]] + [[sym("B"), sym("N")] for _ in range(4)]
        dtypes, exprs = _output_shapes(plg, [_trt_dtype(a.dtype) for a in args], dims)
        got = [tuple(e({"B": b, "N": n_graph}) for e in shape) for shape in exprs]
        assert got == [tuple(r.shape) for r in ref], (got, [tuple(r.shape) for r in ref])
        assert list(dtypes) == [_trt_dtype(r.dtype) for r in ref], (dtypes, [r.dtype for r in ref])
    notes.append(f"finalize total_tokens={total} max_depth={max_depth} N={n_graph}: B in (1, 2)")
    return "; ".join(notes)


class _Capture:
    """Stands in for a @triton.jit kernel: records the grid and arguments a launcher passes."""

    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.calls.append((tuple(grid), args, kw))


def _dyn_desc(dtype, dims):
    d = trt.DynamicPluginTensorDesc()
    d.desc.type = dtype
    d.desc.format = trt.TensorFormat.LINEAR
    d.desc.dims = trt.Dims(list(dims))
    return d


def _aot_launch(plg, ins, outs_like, env_dims):
    """get_output_shapes then get_launch_params as the builder calls them; returns (launch, extra)."""
    in_dims = [[sym(n) for n in names] for names in env_dims]
    _output_shapes(plg, [_trt_dtype(x.dtype) for x in ins], in_dims)
    plg.set_tactic(0)
    in_out = [_dyn_desc(_trt_dtype(x.dtype), x.shape) for x in (*ins, *outs_like)]
    launch, extra = SimpleNamespace(), {}

    class Setter:
        nbSymExprs = 0

        def __setitem__(self, i, v):
            extra[i] = v

    setter = Setter()
    plg.get_launch_params(in_dims, in_out, len(ins), launch, setter, ExprBuilder())
    assert setter.nbSymExprs == len(extra)
    return launch, [extra[i] for i in range(len(extra))]


def _ptx_params(kernel_name: str, ptx: str) -> int:
    import re

    entry = ptx[ptx.index(".entry"):]
    return len(re.findall(rf"{kernel_name}_param_\d+", entry[: entry.index(")")]))


@check
def aot_launch_matches_the_kernels():
    """AOT grid, block, shared memory and extra scalars are what the direct Triton launchers pass."""
    _plugin_internals()
    register_plugins()
    from griffin_trt.tree import kernels, trt_plugin

    graphs = _graph_nodes()
    notes = []
    # expand
    _, attrs, _, plg = _create_like_parser(graphs["expand"], "aot")
    k = attrs["top_k"]
    b = 3
    (s, lp, ids), ref = _expand_case(b, k, k, k)
    launch, extra = _aot_launch(plg, (s, lp, ids), ref, [("B", "F"), ("B", "F", "C"), ("B", "F", "C")])
    env = {"B": b, "F": k, "C": k}
    cap = _Capture()
    real, kernels.expand_kernel = kernels.expand_kernel, cap
    try:
        kernels.launch_expand(s, lp, ids, k, *[torch.empty_like(r) for r in ref],
                              block_i=trt_plugin.AOT_EXPAND_BLOCKS["BLOCK_I"], block_j=trt_plugin.AOT_EXPAND_BLOCKS["BLOCK_J"])
    finally:
        kernels.expand_kernel = real
    (grid, args, kw), = cap.calls
    scalars = [a for a in args if isinstance(a, int)]
    n_in, n_out = 3, 5
    assert [e.kind for e in extra] == ["SymInt32"] * len(scalars)
    assert [e.expr(env) for e in extra] == scalars, ([e.expr(env) for e in extra], scalars)
    assert [a is arg for a, arg in zip(args[:n_in], (s, lp, ids))] == [True] * n_in  # inputs first, then scalars
    got_grid = (launch.grid_x.expr(env), launch.grid_y.expr(env), launch.grid_z.expr(env))
    assert got_grid == (*grid, 1)[:3], (got_grid, grid)
    compiled = trt_plugin.compile_expand("fp32", "i64")
    assert launch.block_x.expr(env) == compiled.num_warps * 32 and launch.shared_mem.expr(env) == compiled.shared
    name, ptx = next(iter(plg.kernel_map.values()))
    assert _ptx_params(name, ptx) == n_in + len(extra) + n_out == compiled.n_params
    sig = [a for a in kernels.expand_kernel.arg_names]
    assert sig[n_in : n_in + len(extra)] == ["F", "C", "K"], sig
    notes.append(f"expand: grid {grid}, block {launch.block_x.expr(env)}, scalars F,C,K = {scalars}, {n_in}+3+{n_out} PTX params")
    # finalize
    _, attrs, _, plg = _create_like_parser(graphs["finalize"], "aot")
    total, max_depth = attrs["total_tokens"], attrs["max_depth"]
    args_in, ref = _finalize_case(2, 10, max_depth, total)
    launch, extra = _aot_launch(plg, args_in, ref, [("B",)] + [("B", "N")] * 4)
    env = {"B": 2, "N": args_in[1].shape[1]}
    cap = _Capture()
    real, kernels.finalize_kernel = kernels.finalize_kernel, cap
    try:
        kernels.launch_finalize(*args_in, max_depth, *[torch.empty_like(r) for r in ref])
    finally:
        kernels.finalize_kernel = real
    (grid, args, kw), = cap.calls
    scalars = [a for a in args if isinstance(a, int)]
    assert [e.expr(env) for e in extra] == scalars, ([e.expr(env) for e in extra], scalars)
    assert (launch.grid_x.expr(env), launch.grid_y.expr(env)) == (grid[0], 1)
    compiled = trt_plugin.compile_finalize(total, max_depth)
    assert {k_: v for k_, v in trt_plugin.finalize_constexprs(total, max_depth).items() if k_ in ("BLOCK_T", "BLOCK_D")} == \
        {k_: v for k_, v in kw.items() if k_ in ("BLOCK_T", "BLOCK_D")}, kw
    name, ptx = next(iter(plg.kernel_map.values()))
    assert _ptx_params(name, ptx) == 5 + len(extra) + 6 == compiled.n_params
    assert kernels.finalize_kernel.arg_names[5:8] == ["N", "T", "MAX_DEPTH"]
    notes.append(f"finalize: grid {grid}, scalars N,T,MAX_DEPTH = {scalars}, 5+3+6 PTX params")
    return "; ".join(notes)


@check
def jit_round_trip_at_runtime():
    """A JIT plugin serializes its attributes and the creator re-creates it at the RUNTIME phase."""
    register_plugins()
    notes = []
    for kind, model in _graph_nodes().items():
        node, attrs, creator, plg = _create_like_parser(model, "jit")
        assert isinstance(plg, trt.IPluginV3QuickRuntime), type(plg).__mro__
        ins = {i.name: i.type.tensor_type for i in model.graph.input}
        plg.get_output_data_types([trt.float32 if "score" in n else trt.int64 for n in node.input],
                                  [len(ins[n].shape.dim) for n in node.input])
        fields = plg.get_fields_to_serialize()
        names = [f.name for f in fields]
        assert names == list(attrs), (names, attrs)
        again = creator.create_plugin(node.op_type, "griffin", fields, trt.TensorRTPhase.RUNTIME)
        assert isinstance(again, trt.IPluginV3QuickRuntime)
        assert again.attrs == attrs and all(type(v) is int for v in again.attrs.values()), again.attrs
        assert again.impl_function is plg.impl_function
        assert again.clone().attrs == attrs
        notes.append(f"{node.op_type}: fields {names} -> {again.attrs}")
    return "; ".join(notes)


@check
def jit_tensors_take_bfloat16():
    """Our JIT impl's view of a TensorRT tensor works for bf16 (TensorRT's own array interface refuses it)."""
    trtp = importlib.import_module("tensorrt.plugin")
    from griffin_trt.tree import trt_plugin

    notes = []
    for dtype in (torch.bfloat16, torch.float32, torch.int64, torch.bool):
        src = (torch.randn(3, 5) * 4).to(dtype)
        t = trtp.Tensor()
        t.dtype = getattr(trt, {torch.bfloat16: "bfloat16", **TRT_OF}[dtype])
        t.shape = trtp.Shape(tuple(src.shape))
        t.strides = tuple(src.stride())
        t.data_ptr = src.data_ptr()
        t.format = trt.TensorFormat.LINEAR
        view = trt_plugin.torch_view(t, device="cpu")
        assert view.dtype == dtype and view.data_ptr() == src.data_ptr() and torch.equal(view, src), dtype
        notes.append(str(dtype).removeprefix("torch."))
    t.dtype = trt.bfloat16
    try:
        t.__cuda_array_interface__
        refused = False
    except ValueError:
        refused = True
    return f"views of {notes}; tensorrt.plugin's own interface refuses bf16: {refused}"


def _signature_params(obj, name: str) -> set[str] | None:
    """Parameter names of a pybind function from its docstring (all overloads), or None if unknown."""
    import inspect
    import re

    try:
        return set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        pass
    doc = getattr(obj, "__doc__", None) or ""
    params: set[str] = set()
    found = False
    for m in re.finditer(rf"(?:^|\n)\s*(?:\d+\.\s*)?{re.escape(name)}\((.*)\)\s*->", doc):
        found = True
        depth, cur = 0, ""
        for ch in m.group(1) + ",":
            if ch in "[(":
                depth += 1
            elif ch in "])":
                depth -= 1
            if ch == "," and depth == 0:
                params.add(cur.split(":")[0].split("=")[0].strip().lstrip("*"))
                cur = ""
            else:
                cur += ch
    return params if found else None


def _return_class(obj, name: str):
    import re

    doc = getattr(obj, "__doc__", None) or ""
    m = re.search(rf"{re.escape(name)}\(.*\)\s*->\s*([\w.]+)", doc)
    if not m:
        return None
    cls = getattr(trt, m.group(1).split(".")[-1], None)
    return cls if isinstance(cls, type) else None


def _all_classes():
    out = [v for v in vars(trt).values() if isinstance(v, type)]
    try:
        trtp = importlib.import_module("tensorrt.plugin")
    except ImportError:  # TensorRT-RTX has no Python plugin API
        return out
    out += [v for v in vars(trtp).values() if isinstance(v, type)]
    return out


def resolve(root: str, steps: list) -> str | None:
    """Follow one chain through the real module; None when every step exists, else what is missing."""
    import inspect

    obj, kind, cls, name = importlib.import_module(root), "value", None, root
    for step in steps:
        op = step[0]
        if op == "attr":
            attr = step[1]
            if kind == "unknown":
                if not any(hasattr(c, attr) for c in _all_classes()):
                    return f"no TensorRT class has `{attr}` (after {name})"
                name = f"{name}.{attr}"
                continue
            if kind == "instance":
                if not hasattr(cls, attr):
                    try:  # a Python class may set the attribute in __init__ (KernelLaunchParams)
                        ok = hasattr(cls(), attr)
                    except Exception:  # noqa: BLE001
                        ok = False
                    if not ok:
                        return f"{cls.__name__} has no attribute `{attr}`"
                member = inspect.getattr_static(cls, attr, None)
                obj, name = (getattr(cls, attr) if member is not None else None), f"{cls.__name__}.{attr}"
                kind = "method" if callable(member) and not isinstance(member, property) else "unknown"
                if kind != "method" and member is not None and not isinstance(member, property):
                    kind, cls = ("instance", type(member)) if not isinstance(member, type) else ("value", None)
                continue
            if not hasattr(obj, attr):
                return f"{name} has no attribute `{attr}`"
            obj, name = getattr(obj, attr), f"{name}.{attr}"
            kind = "value"
        elif op == "new":
            if not isinstance(obj, type):
                return f"{name} is not a class"
            kind, cls = "instance", obj
        elif op == "call":
            kwargs = step[1]
            if kind == "unknown":
                continue
            short = name.split(".")[-1]
            if isinstance(obj, type):
                params = _signature_params(obj.__init__, "__init__")
                missing = [k for k in kwargs if params is not None and k not in params]
                if missing:
                    return f"{name}() takes no keyword {missing}"
                kind, cls = "instance", obj
                continue
            params = _signature_params(obj, short)
            missing = [k for k in kwargs if params is not None and k not in params and "kwargs" not in params]
            if missing:
                return f"{name}() takes no keyword {missing} (has {sorted(params or [])})"
            ret = _return_class(obj, short)
            kind, cls = ("instance", ret) if ret is not None else ("unknown", None)
        name = name if op != "call" else f"{name}()"
    return None


def _inplace_only() -> set[str]:
    """API that only in-place builds use, when this TensorRT is too old for them (kv_layout.py)."""
    from griffin_trt.builders.kv_layout import INPLACE_MIN_TENSORRT, INPLACE_ONLY_API, version_tuple

    return set(INPLACE_ONLY_API) if version_tuple(trt.__version__)[:2] < INPLACE_MIN_TENSORRT else set()


def _not_here() -> set[str]:
    """API our source calls only where this library is not the one in use: TensorRT-RTX's own, and
    the in-place-only API on TensorRT before 10.15 (trt_library.py, kv_layout.py)."""
    from griffin_trt.builders.trt_library import RTX_ONLY_API

    return _inplace_only() | set(RTX_ONLY_API)


def excused_problem(problem: str | None, api: set[str]) -> bool:
    """Whether `resolve`'s problem is a missing member named in `api` ("Class.member", "tensorrt.X")."""
    return any(problem == f"{owner} has no attribute `{attr}`" for owner, attr in (a.rsplit(".", 1) for a in api))


@check
def api_our_source_uses():
    """Every TensorRT / tensorrt.plugin attribute, method and keyword griffin_trt uses (from its AST) exists
    (before 10.15 except the in-place-only API, which the copy-flavour builds those versions make never call)."""
    from _trt_api_usage import collect

    chains = collect()
    missing, skipped = [], set()
    for u in chains:
        problem = resolve(u["root"], u["steps"])
        if excused_problem(problem, _not_here()):
            skipped.add(problem)
        elif problem:
            missing.append(f"{problem} [{', '.join(u['where'][:3])}]")
    assert not missing, "; ".join(missing)
    return f"{len(chains)} chains from the source resolve" + (f" (TensorRT-RTX or in-place only, absent here: "
                                                               f"{sorted(skipped)})" if skipped else "")


@check
def fake_engine_matches_the_real_api():
    """The fake engine/context of the executor unit tests only offer what the real classes have."""
    import inspect

    import _fake_trt

    problems = []
    pairs = [(_fake_trt.FakeEngine, trt.ICudaEngine), (_fake_trt.FakeContext, trt.IExecutionContext),
             (_fake_trt.FakeRuntime, trt.Runtime)]
    if hasattr(trt, "IRuntimeCache"):  # TensorRT-RTX's runtime cache
        pairs += [(_fake_trt.FakeRuntimeConfig, trt.IRuntimeConfig), (_fake_trt.FakeRuntimeCache, trt.IRuntimeCache)]
    for fake, real in pairs:
        for attr, member in vars(fake).items():
            if attr.startswith("_") or not callable(member) and not isinstance(member, property):
                continue
            if not hasattr(real, attr):
                if f"{real.__name__}.{attr}" not in _not_here():
                    problems.append(f"{real.__name__}.{attr} does not exist")
                continue
            if callable(member) and not isinstance(member, property):
                params = _signature_params(getattr(real, attr), attr)
                mine = [p for p in inspect.signature(member).parameters if p != "self"]
                if params is not None and not set(mine) <= params:
                    problems.append(f"{real.__name__}.{attr}{sorted(params)} vs fake {mine}")
    assert not problems, "; ".join(problems)
    return ", ".join(f"{f.__name__} matches {r.__name__}" for f, r in pairs)


def main(names: list[str]) -> int:
    report = {"tensorrt": trt.__version__}
    for name in names or list(CHECKS):
        try:
            detail = CHECKS[name]()
            report[name] = {"ok": True, "detail": detail or ""}
        except Exception as e:  # noqa: BLE001 - every failure is reported with its trace
            report[name] = {"ok": False, "detail": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"}
    print("@@REPORT@@" + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
