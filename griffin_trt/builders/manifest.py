"""The build manifest: `<out>/manifest.json`, what a build produced and what it was built with.

Readers (executors, the Triton repository filler, `griffin-trt serve`) take every shape, limit and
file name from here. Schema (format 1; key names are an interface, keep them):

    {"format": 1, "name": str, "recipe": Recipe.to_dict(), "backend": str, "dtype": str,
     "tree": {"top_k", "depth", "total_tokens", "choices"},
     "limits": {"max_batch", "max_input_len", "max_output_len"},
     "target_kv_len": int, "drafter_kv_len": int, "vocab_size": int, "hidden_size": int,
     "kv_flavour": "inplace" | "copy" (builders/kv_layout.py; absent in older builds: "copy"),
     "eos_token_ids": [int], "draft_vocab": int | null,
     "files": {"target_onnx", "drafter_onnx", "target_engine" | null, "drafter_engine" | null,
               "plugin" | null, "tokenizer": "tokenizer", "token_counts" | null, ...},
     "sha256": {relative path: hex digest},
     "versions": {"griffin_trt", "torch", "transformers", "onnx", "onnxruntime", "tensorrt" | null,
                  "tensorrt_rtx" | null},
     "tensorrt_library": "tensorrt" | "tensorrt-rtx" | null (the library that built the engines; absent in
         older builds: "tensorrt"), "compute_capabilities": ["8.6", ...] | null (TensorRT-RTX's targets;
         null: the library's default set), "engines": {"target", "drafter": tensorrt_engine.network_summary
         + "build_s", "bytes"} | null,
     "gpu": str | null, "gpu_capability": "major.minor" | null, "notes": [str]}

File paths are relative to the build directory. This module imports only the standard library.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .trt_library import LIBRARIES, TENSORRT, TrtLibrary, library_for

FORMAT = 1
MANIFEST = "manifest.json"
FILE_KEYS = (
    "target_onnx", "drafter_onnx", "target_engine", "drafter_engine", "plugin", "tokenizer",
    # the draft-tree plugin graphs and their engines (dynamic trees only)
    "tree_expand_onnx", "tree_finalize_onnx", "tree_expand_engine", "tree_finalize_engine",
    "token_counts",  # the draft-vocabulary frequency table (with a reduced draft vocabulary only)
)
REQUIRED = (
    "format", "name", "recipe", "backend", "dtype", "tree", "limits", "target_kv_len", "drafter_kv_len",
    "vocab_size", "hidden_size", "eos_token_ids", "files", "sha256", "versions", "gpu", "notes",
)
VERSION_PACKAGES = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
}


class ManifestError(ValueError):
    """A build directory whose manifest is missing, malformed, stale or built for another TensorRT."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pkg_version(names: Iterable[str]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def package_versions(tensorrt: str | None = None, library: TrtLibrary = TENSORRT) -> dict[str, str | None]:
    """Versions of the packages a build depends on (read from package metadata: imports nothing);
    `tensorrt` is the version of the engine `library` that built the engines (keyed by its module)."""
    from .. import __version__

    out: dict[str, str | None] = {"griffin_trt": __version__}
    for key, names in VERSION_PACKAGES.items():
        out[key] = _pkg_version(names)
    for lib in LIBRARIES.values():
        out[lib.module] = tensorrt if lib is library else None
    return out


def installed_tensorrt_version(library: TrtLibrary = TENSORRT) -> str | None:
    """The version of a TensorRT library's Python package on this host, or None when it does not import."""
    try:
        module = library.load()
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None
    return getattr(module, "__version__", None)


def engine_library(manifest: dict) -> TrtLibrary:
    """The TensorRT library that built a build's engines (builds before the key existed: TensorRT)."""
    return library_for(manifest.get("tensorrt_library") or TENSORRT.backend) or TENSORRT


def hash_files(build_dir: Path, rel_paths: Iterable[str]) -> dict[str, str]:
    """sha256 of every listed file; a listed directory contributes each file inside it."""
    build_dir = Path(build_dir)
    out: dict[str, str] = {}
    for rel in rel_paths:
        p = build_dir / rel
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file()):
                out[f.relative_to(build_dir).as_posix()] = sha256_file(f)
        elif p.is_file():
            out[Path(rel).as_posix()] = sha256_file(p)
        else:
            raise ManifestError(f"{build_dir}: cannot hash {rel}: no such file")
    return out


def write_manifest(
    out_dir: Path,
    recipe,
    *,
    backend: str,
    vocab_size: int,
    hidden_size: int,
    eos_token_ids: list[int],
    files: dict[str, str | None],
    hashed: Iterable[str] | None = None,
    tensorrt_version: str | None = None,
    tensorrt_library: str | None = None,
    compute_capabilities: list[str] | None = None,
    engines: dict | None = None,
    gpu: str | None = None,
    gpu_capability: str | None = None,
    notes: list[str] | None = None,
    draft_vocab: int | None = None,
    kv_flavour: str = "inplace",
) -> Path:
    """Write `out_dir/manifest.json` (atomically) and return its path.

    `files` maps the FILE_KEYS to paths relative to `out_dir` (None for what was not built);
    `hashed` lists the relative paths to checksum (default: every non-null entry of `files`).
    """
    out_dir = Path(out_dir)
    unknown = sorted(set(files) - set(FILE_KEYS))
    if unknown:
        raise ManifestError(f"unknown file keys {unknown}; known: {list(FILE_KEYS)}")
    files = {k: files.get(k) for k in FILE_KEYS}
    for key in ("target_onnx", "drafter_onnx", "tokenizer"):
        if not files[key]:
            raise ManifestError(f"manifest needs files.{key}")
    if (files["target_engine"] is None) != (files["drafter_engine"] is None):
        raise ManifestError("engines come in pairs: both target_engine and drafter_engine, or neither")
    if files["target_engine"] and not tensorrt_version:
        raise ManifestError("engines are listed but the TensorRT version that built them is not")
    tree = recipe.tree
    data: dict[str, Any] = {
        "format": FORMAT,
        "name": recipe.name,
        "recipe": recipe.to_dict(),
        "backend": backend,
        "dtype": recipe.dtype,
        "tree": {
            "top_k": tree.top_k,
            "depth": tree.depth,
            "total_tokens": tree.total_tokens,
            "choices": [list(c) for c in tree.choices] if tree.choices else None,
        },
        "limits": {
            "max_batch": recipe.limits.max_batch,
            "max_input_len": recipe.limits.max_input_len,
            "max_output_len": recipe.limits.max_output_len,
        },
        "target_kv_len": recipe.target_kv_len,
        "drafter_kv_len": recipe.drafter_kv_len,
        "vocab_size": int(vocab_size),
        "hidden_size": int(hidden_size),
        "kv_flavour": kv_flavour,
        "eos_token_ids": [int(t) for t in eos_token_ids],
        "draft_vocab": draft_vocab,
        "files": files,
        "sha256": hash_files(out_dir, hashed if hashed is not None else [v for v in files.values() if v]),
        "versions": package_versions(tensorrt_version, library_for(tensorrt_library or TENSORRT.backend)),
        "tensorrt_library": tensorrt_library,
        "compute_capabilities": compute_capabilities,
        "engines": engines,
        "gpu": gpu,
        "gpu_capability": gpu_capability,
        "notes": list(notes or []),
    }
    path = out_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def check_tensorrt_version(manifest: dict, build_dir: Path | str = "", installed: str | None = None) -> str:
    """Refuse engines built by another TensorRT library or version (serialized engines only load in the
    exact version that built them). Returns the installed version. `installed` overrides detection (tests).
    """
    where = f"{build_dir}: " if build_dir else ""
    lib = engine_library(manifest)
    name = lib.label
    files = manifest.get("files", {})
    if not files.get("target_engine") or not files.get("drafter_engine"):
        raise ManifestError(
            f"{where}this build has no TensorRT engines (TensorRT was not available when it was built); "
            "serve it with the onnxruntime back end, or rebuild on a host with TensorRT and a GPU"
        )
    built = manifest.get("versions", {}).get(lib.module)
    installed = installed or installed_tensorrt_version(lib)
    if installed is None:
        extra = "trt" if lib is TENSORRT else "rtx"
        raise ManifestError(
            f"{where}the engines were built with {name} {built}, but `import {lib.module}` fails on this host; "
            f"install that exact version (the `{extra}` extra) or serve with the onnxruntime back end"
        )
    if built != installed:
        raise ManifestError(
            f"{where}the engines were built with {name} {built} but this host has {name} {installed}; "
            f"serialized engines only load in the {name} version that built them: rebuild with "
            "`griffin-trt build --recipe <recipe>` on this host"
        )
    return installed


def read_manifest(build_dir: Path | str, verify_hashes: bool = False, backend: str | None = None) -> dict:
    """Load and validate `<build_dir>/manifest.json`.

    Checks the format, the required keys and that every listed file exists; with `verify_hashes`
    also the checksums; with an engine back end ("tensorrt", "tensorrt-rtx") that engines exist and
    match the installed library. Errors are `ManifestError`s that say what to do.
    """
    build_dir = Path(build_dir)
    path = build_dir / MANIFEST
    if not build_dir.is_dir():
        raise ManifestError(f"build directory {build_dir} does not exist; build it with `griffin-trt build --recipe <recipe>`")
    if not path.is_file():
        raise ManifestError(
            f"{build_dir}: no {MANIFEST} (not a griffin-trt build, or the build did not finish); "
            "build it with `griffin-trt build --recipe <recipe>`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise ManifestError(
            f"{path}: manifest format {fmt!r} is not supported (this griffin-trt reads format {FORMAT}); rebuild"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise ManifestError(f"{path}: missing keys {missing}")
    files = data["files"]
    if not isinstance(files, dict) or any(k not in files for k in FILE_KEYS):
        raise ManifestError(f"{path}: files must name {list(FILE_KEYS)}")
    absent = [f"{k} ({v})" for k, v in files.items() if v and not (build_dir / v).exists()]
    if absent:
        raise ManifestError(f"{build_dir}: files listed in the manifest are missing: {', '.join(absent)}; rebuild")
    if verify_hashes:
        bad = []
        for rel, digest in data["sha256"].items():
            p = build_dir / rel
            if not p.is_file():
                bad.append(f"{rel} (missing)")
            elif sha256_file(p) != digest:
                bad.append(f"{rel} (checksum differs)")
        if bad:
            raise ManifestError(f"{build_dir}: files changed since the build: {', '.join(bad)}; rebuild")
    asked = library_for(backend or "")
    if asked:
        if data["files"].get("target_engine") and engine_library(data) is not asked:
            raise ManifestError(
                f"{build_dir}: the engines were built with {engine_library(data).label}, not {asked.label}; serve with "
                f"--backend {engine_library(data).backend} or rebuild with --backend {asked.backend}"
            )
        check_tensorrt_version(data, build_dir)
    return data


def kv_flavour(manifest: dict) -> str:
    """The KV-cache flavour of a build's graphs/engines (builds before the key existed: "copy")."""
    return manifest.get("kv_flavour", "copy")


def build_file(build_dir: Path | str, manifest: dict, key: str) -> Path | None:
    """Absolute path of `files[key]`, or None when that part was not built."""
    rel = manifest["files"].get(key)
    return Path(build_dir) / rel if rel else None
