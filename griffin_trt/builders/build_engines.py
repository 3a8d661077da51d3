"""`griffin-trt build`: recipe -> ONNX graphs (+ TensorRT engines on GPU hosts) + tokenizer + manifest.

Everything is built in a temporary folder next to the output (same filesystem) and renamed into
place only once complete: a failed build leaves the previous output as it was.

Module-level imports stay light (no torch, onnx or transformers) so `griffin-trt --help` is fast.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..recipe import BACKENDS
from .manifest import MANIFEST, ManifestError
from .tensorrt_engine import EngineBuildError

log = logging.getLogger(__name__)

BUILD_LOCK = ".griffin-build.lock"  # in a temporary build folder: flock'ed by the build that owns it
STALE_UNLOCKED_S = 300  # a lock-less temporary folder older than this is a killed build's (or a crash's)
TARGET_ONNX = "target.onnx"
DRAFTER_ONNX = "drafter.onnx"
TOKENIZER_DIR = "tokenizer"
TOKEN_COUNTS = "token_counts.json"  # the draft-vocabulary table the drafter graph was built with


class BuildError(RuntimeError):
    """A build that could not complete; the previous output (if any) is untouched."""


def _check_replaceable(out: Path) -> None:
    """Never move aside a folder that is not an earlier build (a mistyped --out must not eat data)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise BuildError(
            f"refusing to replace {out}: it is not empty and holds no {MANIFEST} (not a griffin-trt build); "
            "remove it or choose another --out"
        )


def _hold_build_lock(tmp: Path):
    """An exclusive flock on tmp/BUILD_LOCK for as long as this build runs (the kernel drops it when the
    process dies, SIGKILL included): it marks the folder as in use. Returns the open file (keep it)."""
    import fcntl

    f = open(tmp / BUILD_LOCK, "w")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _in_use(folder: Path) -> bool:
    import fcntl

    lock = folder / BUILD_LOCK
    if not lock.is_file():  # a build a moment after mkdtemp or mid-swap (ctime: renames count), or a killed one
        try:
            return time.time() - folder.stat().st_ctime < STALE_UNLOCKED_S
        except OSError:
            return True
    try:
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        return False
    except OSError:  # BlockingIOError: a running build holds it
        return True


def remove_stale_builds(out: Path, log_fn=None) -> list[Path]:
    """Remove the temporary folders that killed builds of `out` left next to it: only `.<name>.building-*`
    and `.<name>.old-*` folders (ours by name), and only when no running build holds their lock. An
    `.old-*` folder is a previous build moved aside mid-swap: if `out` itself is missing it is put back."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for kind in ("building", "old"):
        for p in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            if not p.is_dir() or p.is_symlink() or _in_use(p):
                continue
            if kind == "old" and not out.exists() and (p / MANIFEST).is_file():
                os.rename(p, out)  # a swap killed between its two renames: the previous build comes back
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            if log_fn is not None:
                log_fn(f"removed {p.name}, left by an interrupted build")
    return removed


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build over the output; the old build is kept until the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _Steps:
    """A tqdm bar over the named build steps (or plain log lines when progress is off)."""

    def __init__(self, names: list[str], enabled: bool):
        self.enabled = enabled
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc="build", unit="step", file=sys.stderr, leave=True)

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        yield
        log.info("%s: %.1f s", name, time.perf_counter() - t0)
        if self.bar is not None:
            self.bar.update(1)

    def say(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build(
    recipe,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    backend: str | None = None,
    skip_engines: bool = False,
    onnx_exporter: str = "dynamo",
    kv_flavour: str = "auto",
) -> Path:
    """Build `recipe` into `out_dir` (default: the recipe's output_dir) and return the output folder.

    backend overrides the recipe's; `backend="tensorrt"` given here fails where TensorRT cannot build
    engines (a recipe's tensorrt falls back to onnxruntime with a note); skip_engines builds the ONNX
    graphs only even where TensorRT is present. onnx_exporter: "dynamo" (default, falls back to
    "torchscript") or "torchscript". kv_flavour: "auto" (in-place KV caches unless the host's TensorRT
    is older than 10.15 or the TorchScript exporter is asked for), "inplace" or "copy"
    (builders/kv_layout.py).
    """
    from . import tensorrt_engine
    from .trt_library import TENSORRT, library_for

    out = Path(out_dir or recipe.output_dir).expanduser().resolve()
    explicit_backend = backend is not None
    backend = backend or recipe.backend
    if backend not in BACKENDS:
        raise BuildError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    # torch / onnxruntime builds add datacenter TensorRT engines where the host can build them
    library = library_for(backend) or TENSORRT
    # (True, library version) or (False, why not)
    trt_ok, trt_info = (False, "--skip-engines") if skip_engines else tensorrt_engine.available(library)
    # A library asked for by name (or TensorRT-RTX, which builds anywhere it is installed): an onnxruntime
    # deployment instead would be a silent substitute.
    if (backend == library.backend and (explicit_backend or library.builds_without_gpu) and not skip_engines
            and not trt_ok):
        need = ("the `rtx` extra (pip install -e \".[rtx]\")" if library.builds_without_gpu
                else "TensorRT and a CUDA GPU")
        raise BuildError(
            f"--backend {backend} needs {need}, and this host cannot build engines: {trt_info}; "
            f"build with --backend onnxruntime here, or on a host with {library.label}"
        )
    if trt_ok and library.compute_capabilities and recipe.compute_capabilities:  # refused before any export
        problem = tensorrt_engine.unsupported_capabilities(library.load(), recipe.compute_capabilities)
        if problem:
            raise BuildError(problem)
    flavour, flavour_note = _pick_flavour(kv_flavour, trt_info if trt_ok else None, onnx_exporter, library)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out, log_fn=lambda m: print(m, file=sys.stderr))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    lock = _hold_build_lock(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output should not be
    steps = _Steps(
        ["load models", "export target", "export drafter", "draft-tree graphs", "tokenizer", "TensorRT engines",
         "manifest"],
        progress,
    )
    notes: list[str] = [flavour_note]
    try:
        with steps.step("load models"):
            from ..models import load_pair, load_tokenizer, stop_token_ids

            pair = load_pair(recipe.target, recipe.drafter, top_k=recipe.tree.top_k, dtype=recipe.dtype, device="cpu",
                             draft_vocab=recipe.draft_vocab, token_counts=recipe.token_counts)
            if recipe.draft_vocab is not None:
                shutil.copyfile(recipe.token_counts, tmp / TOKEN_COUNTS)
            vocab_size, hidden_size = pair.target.vocab_size, pair.target.hidden_size

        from .export_onnx import drafter_max_tokens, export_drafter, export_target, target_max_tokens

        tree = recipe.tree
        with steps.step("export target"):
            rt = export_target(pair.target, recipe.target_kv_len, tmp / TARGET_ONNX, target_max_tokens(recipe),
                               prefer=onnx_exporter, flavour=flavour)
        with steps.step("export drafter"):
            rd = export_drafter(pair.draft_step, recipe.drafter_kv_len, tmp / DRAFTER_ONNX, drafter_max_tokens(recipe),
                                prefer=onnx_exporter, flavour=flavour)
        notes += rt.notes + rd.notes
        del pair  # release the weights before TensorRT needs the memory

        tree_graphs: dict[str, Path] = {}
        with steps.step("draft-tree graphs"):
            # The tree step as ONNX nodes that TensorRT's parser maps to our plugin (griffin::DraftTree*).
            if not tree.choices:
                from .draft_tree_onnx import build_tree_graphs

                tree_graphs = build_tree_graphs(tmp, tree.top_k, tree.total_tokens, tree.depth + 1)

        with steps.step("tokenizer"):
            try:
                tok = load_tokenizer(recipe.tokenizer)
            except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
                raise BuildError(f"could not load the tokenizer from {recipe.tokenizer}: {e}") from e
            tok.save_pretrained(str(tmp / TOKENIZER_DIR))
            eos = stop_token_ids(recipe.target, tok)

        engines: dict = {}
        with steps.step("TensorRT engines"):
            if trt_ok:
                engines = tensorrt_engine.build_engines(
                    recipe, tmp, tmp / TARGET_ONNX, tmp / DRAFTER_ONNX, timing_cache=out.parent / ".timing_cache",
                    log=steps.say, tree_graphs=tree_graphs, library=library,
                )
                notes += engines.get("notes", [])
            else:
                msg = f"TensorRT not available ({trt_info}): built ONNX graphs only; the onnxruntime back end serves them"
                steps.say(msg)
                notes.append(msg)
                if library_for(backend):
                    notes.append(f"recipe asked for the {backend} back end; this build serves with onnxruntime")
                    backend = "onnxruntime"

        with steps.step("manifest"):
            from .manifest import write_manifest

            files = {
                "target_onnx": TARGET_ONNX,
                "drafter_onnx": DRAFTER_ONNX,
                "target_engine": engines.get("target_engine"),
                "drafter_engine": engines.get("drafter_engine"),
                "plugin": None,  # reserved for a compiled IPluginV3 library (the Python plugins need none)
                "tokenizer": TOKENIZER_DIR,
                "tree_expand_onnx": tree_graphs["expand"].name if tree_graphs else None,
                "tree_finalize_onnx": tree_graphs["finalize"].name if tree_graphs else None,
                "tree_expand_engine": engines.get("tree_expand_engine"),
                "tree_finalize_engine": engines.get("tree_finalize_engine"),
                "token_counts": TOKEN_COUNTS if recipe.draft_vocab is not None else None,
            }
            hashed = [p.relative_to(tmp).as_posix() for p in rt.files + rd.files]
            hashed += [v for k, v in files.items() if v and k not in ("target_onnx", "drafter_onnx")]
            write_manifest(
                tmp,
                recipe,
                backend=backend,
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                eos_token_ids=eos,
                files=files,
                hashed=hashed,
                tensorrt_version=engines.get("tensorrt_version"),
                tensorrt_library=engines.get("tensorrt_library"),
                compute_capabilities=engines.get("compute_capabilities"),
                engines=engines.get("engines"),
                gpu=engines.get("gpu"),
                gpu_capability=engines.get("gpu_capability"),
                notes=notes,
                draft_vocab=recipe.draft_vocab,
                kv_flavour=flavour,
            )
        _check_replaceable(out)  # again: something may have appeared there meanwhile
        lock.close()
        (tmp / BUILD_LOCK).unlink()  # not part of the build; the swap takes microseconds
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.close()
        steps.close()

    # The Triton repository points at the final folder, so it is filled after the swap. Its helper
    # may be absent on a trimmed install; `griffin-trt serve` fills it on demand as well.
    try:
        from ..serving.repository import fill_repository
    except ImportError:
        log.info("griffin_trt.serving.repository is not available: no triton_repo filled")
    else:
        try:
            fill_repository(recipe, out)
        except Exception as e:
            raise BuildError(
                f"the build in {out} is complete, but filling its Triton repository failed: {e}"
            ) from e
    return out


def _pick_flavour(asked: str, tensorrt_version: str | None, exporter: str, library=None) -> tuple[str, str]:
    """The KV-cache flavour to export (see builders/kv_layout.py) and a note saying why.

    tensorrt_version: of `library` (default datacenter TensorRT), None where no engines are built."""
    from .kv_layout import COPY, FLAVOURS, INPLACE, INPLACE_MIN_TENSORRT, flavour_for_tensorrt, version_tuple
    from .trt_library import TENSORRT

    need = ".".join(map(str, INPLACE_MIN_TENSORRT))
    why = f"TensorRT {tensorrt_version}" if tensorrt_version else "no TensorRT: onnxruntime serves the graphs"
    if library not in (None, TENSORRT) and tensorrt_version:
        # TensorRT-RTX lowers TensorScatter in place in every release (its versions count from 1)
        why, tensorrt_version = f"{library.label} {tensorrt_version}", None
    if asked == "auto":
        if exporter == "torchscript":
            return COPY, "KV caches: copy flavour (the TorchScript exporter cannot write opset 24 TensorScatter)"
        flavour = flavour_for_tensorrt(tensorrt_version)
        return flavour, f"KV caches: {flavour} flavour ({why}; in place needs TensorRT >= {need})"
    if asked not in FLAVOURS:
        raise BuildError(f"--kv-flavour {asked!r} is not one of auto, {', '.join(FLAVOURS)}")
    if asked == INPLACE and exporter == "torchscript":
        raise BuildError("in-place KV caches need the dynamo exporter (opset 24 TensorScatter); drop --exporter torchscript")
    if asked == INPLACE and tensorrt_version and version_tuple(tensorrt_version)[:2] < INPLACE_MIN_TENSORRT:
        raise BuildError(f"in-place KV caches need TensorRT >= {need}; this host has TensorRT {tensorrt_version}")
    return asked, f"KV caches: {asked} flavour (asked for)"


# ---------------------------------------------------------------- CLI: griffin-trt build


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "build",
        help="export ONNX graphs, build TensorRT engines where possible, write the manifest and triton_repo",
        description="Build a recipe into its output folder (atomically: a failed build keeps the old one).",
    )
    p.add_argument("--recipe", type=Path, default=None, help="build recipe (default: build/demo.toml)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the recipe's output_dir)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="back end recorded for serving (default: the recipe's); tensorrt / tensorrt-rtx also build "
                        "its engines")
    p.add_argument("--skip-engines", action="store_true", help="ONNX graphs only, even where TensorRT is present")
    p.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                   help="ONNX exporter tried first (the other one is the fallback for copy-flavour graphs)")
    p.add_argument("--kv-flavour", choices=("auto", "inplace", "copy"), default="auto",
                   help="KV caches: per-layer, updated in place (TensorScatter; TensorRT >= 10.15, onnxruntime) or "
                        "whole caches returned each call (older TensorRT); auto picks by the host's TensorRT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_build, handler=run_build)
    return p


def run_build(args: argparse.Namespace) -> int:
    from ..recipe import load_recipe

    recipe_path = args.recipe or Path(__file__).resolve().parents[2] / "build" / "demo.toml"
    unchecked = load_recipe(recipe_path, check_paths=False)
    if unchecked.fetch is not None:  # a registry target: fetched (verified, converted) once into the cache
        from ..fetch import fetch

        fetch(unchecked.fetch, unchecked.target)
    recipe = load_recipe(recipe_path)
    t0 = time.perf_counter()
    try:
        out = build(
            recipe, args.out, progress=not args.quiet, backend=args.backend, skip_engines=args.skip_engines,
            onnx_exporter=args.exporter, kv_flavour=args.kv_flavour,
        )
    except (BuildError, ManifestError, EngineBuildError) as e:
        print(f"griffin-trt build: error: {e}", file=sys.stderr)
        return 1
    print(f"built {recipe.name} into {out} in {time.perf_counter() - t0:.1f} s")
    return 0
