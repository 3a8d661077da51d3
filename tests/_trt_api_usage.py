"""Which TensorRT Python API our source uses, read from its AST (so the list cannot drift).

A *chain* starts at the `tensorrt` or `tensorrt.plugin` module and lists the steps our code takes
from it: ("attr", name), ("call", [keyword names]) and ("new",) (an instance of the class so far,
from a type annotation). Roots are found where the code binds the modules: `import tensorrt as X`,
`X = importlib.import_module("tensorrt")`, and the parameters named `trt` / `trtp` (our convention
for passing the modules around). Values flow through assignments (locals and `self.x` attributes
of a class), and string annotations such as `ctx: "trt.IExecutionContext"` type a local or a
parameter whose value the AST cannot follow (an element of a list, an argument); in annotations
`trt` / `trtp` always name the modules. The checker
(`_trt_bindings_check.py`) resolves every chain against the real bindings of one TensorRT version.

Standard library only; `python tests/_trt_api_usage.py` prints the chains.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

MODULES = ("tensorrt", "tensorrt.plugin")
PARAM_ROOTS = {"trt": "tensorrt", "trtp": "tensorrt.plugin"}
REPO = Path(__file__).resolve().parent.parent


class _Walker:
    def __init__(self, rel: str):
        self.rel = rel
        self.record = True
        self.usages: dict[tuple, dict] = {}

    # ------------------------------------------------------------------ values
    def _add(self, val, line: int):
        if self.record and val is not None and val[1]:
            key = (val[0], tuple((s[0], tuple(s[1]) if len(s) > 1 and isinstance(s[1], list) else s[1:]) for s in val[1]))
            self.usages.setdefault(key, {"root": val[0], "steps": [list(s) for s in val[1]], "where": []})
            where = f"{self.rel}:{line}"
            if where not in self.usages[key]["where"]:
                self.usages[key]["where"].append(where)

    def _annotation(self, node, env):
        """A string annotation "trt.X.Y" (or a name bound to a class chain) -> an instance chain."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                node = ast.parse(node.value, mode="eval").body
            except SyntaxError:
                return None
        if node is None:
            return None
        val = self.eval(node, {**{k: (v, ()) for k, v in PARAM_ROOTS.items()}, **env}, record=False)
        return (val[0], val[1] + (("new",),)) if val else None

    def eval(self, node, env, record=True):
        """The chain an expression evaluates to (or None), recording every chain it contains."""
        saved, self.record = self.record, self.record and record
        try:
            return self._eval(node, env)
        finally:
            self.record = saved

    def _eval(self, node, env):
        if isinstance(node, ast.Name):
            return env.get(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and f"self.{node.attr}" in env:
                return env[f"self.{node.attr}"]
            base = self._eval(node.value, env)
            if base is None:
                return None
            val = (base[0], base[1] + (("attr", node.attr),))
            self._add(val, node.lineno)
            return val
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Attribute) and f.attr == "import_module" and isinstance(f.value, ast.Name)
                    and f.value.id == "importlib" and node.args and isinstance(node.args[0], ast.Constant)
                    and node.args[0].value in MODULES):
                return (node.args[0].value, ())
            base = self._eval(f, env)
            for a in node.args:
                self._eval(a, env)
            for k in node.keywords:
                self._eval(k.value, env)
            if base is None:
                return None
            val = (base[0], base[1] + (("call", sorted(k.arg for k in node.keywords if k.arg)),))
            self._add(val, node.lineno)
            return val
        for child in ast.iter_child_nodes(node):  # record chains inside any other expression
            if isinstance(child, ast.expr):
                self._eval(child, env)
        return None

    # ------------------------------------------------------------------ statements
    def _bind(self, target, val, env):
        if isinstance(target, ast.Name):
            if val is None:
                env.pop(target.id, None)
            else:
                env[target.id] = val
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            if val is not None:
                env[f"self.{target.attr}"] = val
        elif isinstance(target, ast.Attribute):  # a store into a TensorRT object: the attribute must exist
            self._eval(target, env)

    def body(self, stmts, env):
        for st in stmts:
            self.stmt(st, env)

    def stmt(self, st, env):
        if isinstance(st, ast.Import):
            for a in st.names:
                if a.name in MODULES:
                    if a.asname:
                        env[a.asname] = (a.name, ())
                    else:
                        env[a.name.split(".")[0]] = ("tensorrt", ())
        elif isinstance(st, ast.ImportFrom) and st.module in MODULES:
            for a in st.names:
                env[a.asname or a.name] = (st.module, (("attr", a.name),))
        elif isinstance(st, ast.Assign):
            val = self.eval(st.value, env)
            for t in st.targets:
                self._bind(t, val, env)
        elif isinstance(st, ast.AnnAssign):
            val = self.eval(st.value, env) if st.value is not None else None
            self._bind(st.target, self._annotation(st.annotation, env) or val, env)
        elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function(st, env)
        elif isinstance(st, ast.ClassDef):
            self.klass(st, env)
        else:
            for field in ("test", "iter", "value", "exc", "msg", "context_expr"):
                sub = getattr(st, field, None)
                if isinstance(sub, ast.expr):
                    self.eval(sub, env)
            if isinstance(st, ast.With):
                for item in st.items:
                    self.eval(item.context_expr, env)
            for field in ("body", "orelse", "finalbody"):
                self.body(getattr(st, field, []) or [], env)
            for h in getattr(st, "handlers", []) or []:
                self.body(h.body, env)

    def function(self, fn, outer):
        env = dict(outer)
        for dec in fn.decorator_list:
            self.eval(dec, env)
        args = fn.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.arg in PARAM_ROOTS:
                env[a.arg] = (PARAM_ROOTS[a.arg], ())
            else:
                ann = self._annotation(a.annotation, env)
                if ann is not None:
                    env[a.arg] = ann
                else:
                    env.pop(a.arg, None)
        self.body(fn.body, env)
        return env

    def klass(self, cls, outer):
        env = dict(outer)
        methods = [s for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        # First pass: learn the chains stored in self attributes; second pass: record.
        saved, self.record = self.record, False
        for m in methods:
            local = self.function(m, env)
            env.update({k: v for k, v in local.items() if k.startswith("self.")})
        self.record = saved
        for st in cls.body:
            self.stmt(st, env)


def collect(root: Path = REPO / "griffin_trt") -> list[dict]:
    """Every chain into the TensorRT API our package's source takes, with where it is taken."""
    out: dict[tuple, dict] = {}
    for path in sorted(Path(root).rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        w = _Walker(rel)
        w.body(ast.parse(path.read_text(), filename=rel).body, {})
        for key, u in w.usages.items():
            if key in out:
                out[key]["where"] += u["where"]
            else:
                out[key] = u
    return list(out.values())


if __name__ == "__main__":
    json.dump(collect(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "griffin_trt"), sys.stdout, indent=1)
