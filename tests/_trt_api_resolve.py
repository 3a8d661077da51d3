"""Resolve every TensorRT chain our source takes (tests/_trt_api_usage.py) in the library on PYTHONPATH.

`python tests/_trt_api_resolve.py` (datacenter TensorRT, e.g. the stub-library bindings of
scripts/trt_bindings.py) or `... --rtx` (TensorRT-RTX from scripts/trt_rtx.py: our source's `tensorrt`
is then `tensorrt_rtx`) prints one line `@@CHAINS@@{chain: problem or null}` and, with --rtx, the
fake-engine check against TensorRT-RTX's classes. tests/test_trt_rtx.py compares the two.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if "--rtx" in sys.argv:
    import tensorrt_rtx

    sys.modules["tensorrt"] = tensorrt_rtx  # what our `trt` parameters are bound to on a TensorRT-RTX back end

import _trt_bindings_check as chk  # noqa: E402
from _trt_api_usage import collect  # noqa: E402


def chain_key(u: dict) -> str:
    return " ".join([u["root"], *(f"{s[0]}:{s[1]}" if len(s) > 1 else s[0] for s in u["steps"])])


def main() -> int:
    out = {}
    for u in collect():
        try:
            importlib.import_module(u["root"])
        except ImportError:
            problem = f"no module `{u['root']}`"
        else:
            problem = chk.resolve(u["root"], u["steps"])
        out[chain_key(u)] = {"problem": problem, "where": u["where"][:2]}
    report = {"version": chk.trt.__version__, "chains": out}
    if "--rtx" in sys.argv:
        try:
            report["fakes"] = {"ok": True, "detail": chk.fake_engine_matches_the_real_api()}
        except AssertionError as e:
            report["fakes"] = {"ok": False, "detail": str(e)}
    print("@@CHAINS@@" + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
