"""The real TensorRT Python bindings on a machine without TensorRT's libraries (CI, CPU hosts).

TensorRT's libraries are not installable here, but its Python bindings are: the
`tensorrt-cuXX-bindings` wheels hold the extension module (`tensorrt_bindings/tensorrt.so`) and the
pure-Python `tensorrt.plugin` package; the `tensorrt-cuXX` sdist holds the `tensorrt` package that
wraps them. The extension links a handful of C symbols from libnvinfer / libnvinfer_plugin /
libnvonnxparser; stub libraries that define them (returning NULL / 0), built with the system C
compiler and placed next to the module (its RPATH is $ORIGIN), make `import tensorrt` work. Then
every class, enum, signature and docstring is real and `tensorrt.plugin` really runs; whatever
needs libnvinfer itself (builder, parser, runtime, the C++ plugin registry) does not.

    python scripts/trt_bindings.py            # set up every series in SERIES, print their folders
    python scripts/trt_bindings.py 11 10.x    # only these

Each version is assembled once into `.cache/tensorrt/<version>/site` (git-ignored) and reused: a
series is satisfied by any cached version in its range without asking the index again (delete the
folder, or set GRIFFIN_TRT_REFRESH=1, to pick up newer releases). Use a version in a subprocess
with that folder first on PYTHONPATH (never import two versions in one process).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("GRIFFIN_TRT_CACHE", REPO / ".cache" / "tensorrt"))

# name -> (bindings wheel, wrapper sdist, version range). "11": the newest TensorRT; "10.x": the newest
# 10.x with the in-place KV cache (>= 10.15); "10.9": the oldest we support (Python plugins with aot_impl),
# laid out as NVIDIA's tar / container installs have it (see _assemble).
SERIES = {
    "11": ("tensorrt-cu13-bindings", "tensorrt-cu13", (11, 0), (12, 0)),
    "10.x": ("tensorrt-cu12-bindings", "tensorrt-cu12", (10, 15), (11, 0)),
    "10.9": ("tensorrt-cu12-bindings", "tensorrt-cu12", (10, 9), (10, 10)),
}
# What the extension links, per library (libnvinfer gets any symbol not listed), from
# `nm -D --undefined-only tensorrt.so`; used when nm/ldd are missing.
KNOWN_SYMBOLS = {
    "libnvinfer": ["createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
                   "getPluginRegistry", "getBuilderPluginRegistry"],
    "libnvinfer_plugin": ["initLibNvInferPlugins"],
    "libnvonnxparser": ["createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion"],
}


def site_env(site: Path, base: dict | None = None) -> dict:
    """`base` (default: this process's environment) with `site` first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


class Unavailable(RuntimeError):
    """The bindings cannot be set up here (no C compiler, or no wheel for this Python); says why."""


@dataclass(frozen=True)
class Bindings:
    series: str
    version: str
    site: Path  # put first on PYTHONPATH

    def env(self, base: dict | None = None) -> dict:
        return site_env(self.site, base)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def _in_range(version: str, lo: tuple, hi: tuple) -> bool:
    return lo <= _version_tuple(version)[: len(lo)] < hi


def _cached(series: str) -> Bindings | None:
    _, _, lo, hi = SERIES[series]
    found = []
    for d in CACHE.glob("*/site"):
        meta = d.parent / "ok.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            if info.get("python") == _py_tag() and _in_range(info["version"], lo, hi):
                found.append(info["version"])
    if not found:
        return None
    best = max(found, key=_version_tuple)
    return Bindings(series, best, CACHE / best / "site")


def _py_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def _pip_download(spec: str, dest: Path, binary: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(dest), spec]
    cmd += ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:", "--no-build-isolation"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz")]
    if proc.returncode != 0 or not files:
        err = " ".join(line for line in proc.stderr.splitlines() if not line.startswith("WARNING: Location"))
        raise Unavailable(f"`pip download {spec}` found nothing for {_py_tag()}: {err.strip()[-300:]}")
    return files[0]


def _trt_symbols(so: Path) -> dict[str, list[str]]:
    """Undefined symbols of the extension that no system library provides, grouped by stub library."""
    if not (shutil.which("nm") and shutil.which("ldd")):
        return KNOWN_SYMBOLS
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(so)], capture_output=True, text=True, check=True)
    names = {line.split()[-1] for line in undefined.stdout.splitlines() if line.strip()}
    names = {n for n in names if "@" not in n and not n.startswith(("Py", "_Py", "_Z", "__", "_ITM"))}
    system = set()
    ldd = subprocess.run(["ldd", str(so)], capture_output=True, text=True).stdout
    for lib in re.findall(r"=>\s+(/\S+)", ldd):
        defined = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True).stdout
        system |= {line.split()[-1].split("@")[0] for line in defined.splitlines() if line.strip()}
    groups: dict[str, list[str]] = {lib: [] for lib in KNOWN_SYMBOLS}
    for name in sorted(names - system):
        lib = "libnvonnxparser" if "OnnxParser" in name else "libnvinfer_plugin" if "InferPlugins" in name else "libnvinfer"
        groups[lib].append(name)
    return groups


def _build_stubs(so: Path, major: int) -> list[str]:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise Unavailable("no C compiler (cc, gcc or clang) to build TensorRT's stub libraries")
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        for lib, symbols in _trt_symbols(so).items():
            src = Path(tmp) / f"{lib}.c"
            # Every entry point returns NULL / 0: importing works, creating a builder or runtime gets nothing.
            src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
            name = f"{lib}.so.{major}"
            subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{name}", "-o", str(so.parent / name), str(src)],
                           check=True, capture_output=True)
            made.append(f"{name}: {', '.join(symbols)}")
    return made


def _assemble(series: str) -> Bindings:
    wheel_name, sdist_name, lo, hi = SERIES[series]
    spec = f"{wheel_name}>={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tmp = Path(tmp)
        (tmp / "dl").mkdir()
        wheel = _pip_download(spec, tmp / "dl", binary=True)
        version = wheel.name.split("-")[1]
        (tmp / "sdl").mkdir()
        sdist = _pip_download(f"{sdist_name}=={version}", tmp / "sdl", binary=False)
        site = tmp / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        with tarfile.open(sdist) as t:
            members = [m for m in t.getmembers() if "/tensorrt/" in m.name and m.isfile()]
            for m in members:
                m.name = m.name[m.name.index("/tensorrt/") + 1 :]
            t.extractall(site, members=members)
        layout = "pip"
        if not (site / "tensorrt" / "plugin" / "__init__.py").is_file():
            # Before 10.14 pip's `tensorrt` wrapper has no `plugin` package: `import tensorrt.plugin`
            # fails on a pip install. NVIDIA's tar / container installs ship the bindings package
            # itself as `tensorrt` (plugin included): lay it out that way.
            layout = "tar"
            shutil.rmtree(site / "tensorrt")
            os.rename(site / "tensorrt_bindings", site / "tensorrt")
        so = next((site / d / "tensorrt.so" for d in ("tensorrt_bindings", "tensorrt") if (site / d / "tensorrt.so").is_file()),
                  None)
        if so is None or not (site / "tensorrt" / "__init__.py").is_file():
            raise Unavailable(f"{wheel.name} / {sdist.name} do not have the expected layout")
        stubs = _build_stubs(so, _version_tuple(version)[0])
        check = subprocess.run(
            [sys.executable, "-c", "import tensorrt, tensorrt.plugin; print(tensorrt.__version__)"],
            env=Bindings(series, version, site).env(), capture_output=True, text=True,
        )
        if check.returncode != 0 or check.stdout.strip().splitlines()[-1:] != [version]:
            raise RuntimeError(f"assembled TensorRT {version} does not import: {(check.stdout + check.stderr).strip()[-600:]}")
        (tmp / "ok.json").write_text(json.dumps(
            {"version": version, "python": _py_tag(), "wheel": wheel.name, "sdist": sdist.name, "layout": layout,
             "stubs": stubs},
            indent=1))
        shutil.rmtree(tmp / "dl"), shutil.rmtree(tmp / "sdl")
        final = CACHE / version
        try:
            os.rename(tmp, final)  # atomic; another process may have finished first
        except OSError:
            if not (final / "ok.json").is_file():
                raise
        os.makedirs(tmp, exist_ok=True)  # for TemporaryDirectory's cleanup
    return Bindings(series, version, final / "site")


def ensure(series: str) -> Bindings:
    """The bindings of one series (see SERIES), from the cache or set up now. Raises Unavailable."""
    if series not in SERIES:
        raise ValueError(f"unknown series {series!r}; known: {list(SERIES)}")
    if not os.environ.get("GRIFFIN_TRT_REFRESH"):
        hit = _cached(series)
        if hit is not None:
            return hit
    return _assemble(series)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", nargs="*", default=list(SERIES), help=f"any of {list(SERIES)}")
    args = ap.parse_args(argv)
    rc = 0
    for s in args.series:
        try:
            b = ensure(s)
            print(f"{s}: TensorRT {b.version} in {b.site}")
        except Unavailable as e:
            print(f"{s}: unavailable: {e}")
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
