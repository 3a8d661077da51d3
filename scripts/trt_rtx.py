"""TensorRT for RTX, real libraries and all, for the tests (CI included: it builds engines without a GPU).

Installs the `rtx` extra's requirement from pyproject.toml (`tensorrt-rtx-cu13`: the front end sdist,
its bindings wheel and its 95 MB libraries wheel, all from the package registry) with pip into
`.cache/tensorrt-rtx/<version>/site` (git-ignored, about 235 MB), once; later runs reuse any cached
version that satisfies the requirement without asking the index (delete the folder, or set
GRIFFIN_TRT_REFRESH=1, to pick up a newer release). Use it in a subprocess with that folder first on
PYTHONPATH (`Rtx.env()`).

    python scripts/trt_rtx.py          # set it up, print its folder
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from trt_bindings import site_env  # the same PYTHONPATH rule as the datacenter bindings

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("GRIFFIN_TRT_RTX_CACHE", REPO / ".cache" / "tensorrt-rtx"))
MODULE = "tensorrt_rtx"


class Unavailable(RuntimeError):
    """TensorRT-RTX cannot be installed here (no wheel for this Python or platform, no index); says why."""


@dataclass(frozen=True)
class Rtx:
    version: str
    site: Path  # put first on PYTHONPATH

    def env(self, base: dict | None = None) -> dict:
        return site_env(self.site, base)


def requirement() -> str:
    """The `rtx` extra's TensorRT-RTX requirement, e.g. 'tensorrt-rtx-cu13==1.7.1.116' (pyproject.toml)."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(r for r in extras["rtx"] if r.startswith("tensorrt-rtx"))


def _py_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def _satisfies(version: str, req: str) -> bool:
    from packaging.requirements import Requirement

    return Requirement(req).specifier.contains(version, prereleases=True)


def _cached(req: str) -> Rtx | None:
    for meta in sorted(CACHE.glob("*/ok.json")):
        info = json.loads(meta.read_text())
        if info.get("python") == _py_tag() and _satisfies(info["version"], req):
            return Rtx(info["version"], meta.parent / "site")
    return None


def _install(req: str) -> Rtx:
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmp = Path(tmp)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target",
                               str(tmp / "site"), req], capture_output=True, text=True)
        if proc.returncode != 0:
            err = " ".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("WARNING: Location"))
            raise Unavailable(f"`pip install {req}` failed for {_py_tag()}: {err.strip()[-400:]}")
        check = subprocess.run([sys.executable, "-c", f"import {MODULE}; print({MODULE}.__version__)"],
                               env=Rtx("", tmp / "site").env(), capture_output=True, text=True)
        version = check.stdout.strip().splitlines()[-1] if check.returncode == 0 and check.stdout.strip() else ""
        if not re.fullmatch(r"[\d.]+", version):
            raise RuntimeError(f"the installed {req} does not import: {(check.stdout + check.stderr).strip()[-600:]}")
        (tmp / "ok.json").write_text(json.dumps({"version": version, "python": _py_tag(), "requirement": req}))
        final = CACHE / version
        try:
            os.rename(tmp, final)  # atomic; another process may have finished first
        except OSError:
            if not (final / "ok.json").is_file():
                raise
        os.makedirs(tmp, exist_ok=True)  # for TemporaryDirectory's cleanup
    return Rtx(version, final / "site")


def ensure() -> Rtx:
    """TensorRT-RTX from the cache, or installed now. Raises Unavailable."""
    req = requirement()
    if not os.environ.get("GRIFFIN_TRT_REFRESH"):
        hit = _cached(req)
        if hit is not None:
            return hit
    return _install(req)


def main() -> int:
    try:
        rtx = ensure()
    except Unavailable as e:
        print(f"TensorRT-RTX unavailable: {e}")
        return 1
    print(f"TensorRT-RTX {rtx.version} in {rtx.site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
