"""Filling the Triton model repository: checked-in templates (`triton_repo/`) + recipe + manifest.

Every value in a filled `config.pbtxt` comes from the recipe or the build manifest (placeholders
`${name}`, `string.Template` syntax); nothing is typed twice. The griffin model also gets the recipe
itself (`griffin/recipe.json`, absolute paths) so the runtime inside Triton sees the same settings
as `griffin-trt generate`. The result is written next to a temporary name and renamed into place,
so a reader never sees a half-filled repository.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import string
import sys
import tempfile
from pathlib import Path
from typing import Any

MODELS = ("preprocessing", "griffin", "postprocessing", "ensemble")
REQUIRED_INPUTS = ("text_input", "max_tokens")  # required by the models (optional in the ensemble)


class RepositoryError(ValueError):
    """The templates or the fill values are unusable (missing template, unknown placeholder)."""


def templates_dir() -> Path:
    """The checked-in `triton_repo/` (or `$GRIFFIN_TRT_TEMPLATES`)."""
    env = os.environ.get("GRIFFIN_TRT_TEMPLATES")
    cands = [Path(env)] if env else []
    cands.append(Path(__file__).resolve().parents[2] / "triton_repo")
    for c in cands:
        if (c / "griffin" / "config.pbtxt").is_file():
            return c
    raise RepositoryError(f"Triton repository templates not found (looked in {', '.join(map(str, cands))})")


def recipe_as_toml_dict(recipe) -> dict[str, Any]:
    """The recipe in the shape `recipe_from_dict` reads (all paths absolute)."""
    tree: dict[str, Any] = {"top_k": recipe.tree.top_k, "depth": recipe.tree.depth, "total_tokens": recipe.tree.total_tokens}
    if recipe.tree.choices:
        tree["choices"] = [list(c) for c in recipe.tree.choices]
    model = {
        "target": str(Path(recipe.target).resolve()),
        "drafter": str(Path(recipe.drafter).resolve()),
        "tokenizer": str(Path(recipe.tokenizer).resolve()),
        "dtype": recipe.dtype,
    }
    if recipe.draft_vocab is not None:
        model.update(draft_vocab=recipe.draft_vocab, token_counts=str(Path(recipe.token_counts).resolve()))
    budgets = []
    for b in recipe.schedule.budgets:
        budgets.append({"batch": b.batch, "total_tokens": b.total_tokens, **({"depth": b.depth} if b.depth else {})})
    return {
        "name": recipe.name,
        "model": model,
        "tree": tree,
        "limits": {
            "max_batch": recipe.limits.max_batch,
            "max_input_len": recipe.limits.max_input_len,
            "max_output_len": recipe.limits.max_output_len,
        },
        "build": {
            "backend": recipe.backend,
            "device": recipe.device,
            "output_dir": str(Path(recipe.output_dir).resolve()),
            "fp8": recipe.fp8,
        },
        "schedule": {"budgets": budgets},
    }


def python_path_entries() -> list[str]:
    """Where the serving Python finds our packages: the project root and this env's site-packages."""
    entries = [str(Path(__file__).resolve().parents[2])]
    try:
        entries += site.getsitepackages()
    except AttributeError:  # pragma: no cover - virtualenv's old site module
        pass
    seen: list[str] = []
    for e in entries:
        if e not in seen and Path(e).is_dir():
            seen.append(e)
    return seen


def _pbtxt_str(v: Any) -> str:
    """A value for inside a double-quoted protobuf text string."""
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def tokenizer_dir(recipe, out_dir: Path) -> Path:
    """The tokenizer a deployment serves with: the build's copy, else the recipe's."""
    tok = Path(out_dir).resolve() / "tokenizer"
    if (tok / "tokenizer_config.json").is_file() or (tok / "tokenizer.json").is_file():
        return tok
    return Path(recipe.tokenizer).resolve()


def fill_values(recipe, out_dir: Path, manifest: dict | None = None) -> dict[str, str]:
    out_dir = Path(out_dir).resolve()
    manifest = manifest or {}
    tree = recipe.tree
    values: dict[str, Any] = {
        "recipe_name": recipe.name,
        "max_batch": recipe.limits.max_batch,
        "max_input_len": recipe.limits.max_input_len,
        "max_output_len": recipe.limits.max_output_len,
        "build_dir": out_dir,
        "manifest": out_dir / "manifest.json" if (out_dir / "manifest.json").is_file() else "",
        "backend": manifest.get("backend", recipe.backend),
        "device": recipe.device,
        "dtype": recipe.dtype,
        "tokenizer_dir": tokenizer_dir(recipe, out_dir),
        # TensorRT-LLM EagleDecodingConfig names, so a later move onto its flow maps one to one.
        "use_dynamic_tree": "false" if tree.choices else "true",
        "dynamic_tree_max_topK": tree.top_k,
        "max_total_draft_tokens": tree.tree_size - 1,
        "max_draft_len": tree.max_accept - 1,
        "draft_vocab": recipe.draft_vocab or 0,  # 0: the drafter drafts over the whole vocabulary
        "tree_schedule": tree_schedule_text(recipe),
        "python_path": os.pathsep.join(python_path_entries()),
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "python_executable": sys.executable,
    }
    filled = {k: _pbtxt_str(v) for k, v in values.items()}
    filled.update(trtllm_blocks())  # generated config text, not string values
    return filled


def tree_schedule_text(recipe) -> str:
    """The tree budget by active rows, e.g. "1+: 60 tokens depth 5; 4+: plain"."""
    t = recipe.tree
    parts = [f"1+: {t.tree_size} tokens" + ("" if t.choices else f" depth {t.depth}")]
    for b in recipe.schedule.budgets:
        parts.append(f"{b.batch}+: " + ("plain" if b.total_tokens == 1 else f"{b.total_tokens} tokens"
                                         + (f" depth {b.depth}" if b.depth else "")))
    return "; ".join(parts)


def trtllm_blocks() -> dict[str, str]:
    """Input declarations for every TensorRT-LLM ensemble input (one table; the ensemble model maps
    each to its griffin name from the same table)."""
    from .trtllm_inputs import INPUTS

    def decl(name, i, optional):
        opt = " optional: true" if optional else ""
        return f'  {{ name: "{name}" data_type: {i.dtype} dims: {i.dims}{opt} }},'

    return {
        # All optional in the ensemble (see its config: its model.py refuses a missing one by name).
        "trtllm_ensemble_inputs": "\n".join(decl(i.name, i, True) for i in INPUTS),
        "trtllm_griffin_inputs": "\n".join(
            decl(i.griffin, i, i.name not in REQUIRED_INPUTS) for i in INPUTS if i.griffin
        ),
    }


def _fill_tree(src: Path, dst: Path, values: dict[str, str]) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=False)
    for cfg in sorted(dst.rglob("config.pbtxt")):
        text = cfg.read_text()
        try:
            filled = string.Template(text).substitute(values)
        except KeyError as e:
            raise RepositoryError(f"{cfg.relative_to(dst)}: unknown placeholder ${{{e.args[0]}}}") from None
        except ValueError as e:
            raise RepositoryError(f"{cfg.relative_to(dst)}: bad placeholder syntax: {e}") from None
        cfg.write_text(filled)


def fill_repository(recipe, out_dir: str | os.PathLike, templates: str | os.PathLike | None = None) -> Path:
    """Write `<out_dir>/triton_repo` from the templates, the recipe and `<out_dir>/manifest.json`."""
    out_dir = Path(out_dir).resolve()
    src = Path(templates) if templates else templates_dir()
    missing = [m for m in MODELS if not (src / m / "config.pbtxt").is_file()]
    if missing:
        raise RepositoryError(f"{src}: template(s) {missing} lack config.pbtxt")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    values = fill_values(recipe, out_dir, manifest)
    dest = out_dir / "triton_repo"
    tmp = Path(tempfile.mkdtemp(prefix=".triton_repo.tmp-", dir=out_dir))
    try:
        staged = tmp / "triton_repo"
        _fill_tree(src, staged, values)
        (staged / "griffin" / "recipe.json").write_text(json.dumps(recipe_as_toml_dict(recipe), indent=2) + "\n")
        old = None
        if dest.exists():
            old = tmp / "previous"
            os.rename(dest, old)
        os.rename(staged, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
