"""`train(config)`: data -> GRIFFIN's stages -> released layout -> tau through the runtime."""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

from .config import TrainConfig, TrainError


def _setup(cfg: TrainConfig):
    # cuBLAS needs this before CUDA starts to be deterministic; harmless elsewhere.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.manual_seed(cfg.seed)
    from ..models.pair import resolve_device

    try:
        device = resolve_device(cfg.device)
    except RuntimeError as e:
        raise TrainError(str(e).replace("the recipe asks for", "--device asks for")) from e
    target_dtype = cfg.target_dtype if cfg.target_dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    return torch, device, target_dtype


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) a training; returns the report (also written to WORK/report.json)."""
    cfg.validate()
    torch, device, target_dtype = _setup(cfg)
    from ..models import CheckpointError, load_target, load_tokenizer, stop_token_ids
    from .corpus import CorpusError, load_prompts
    from .export import drafter_config, new_drafter, write_drafter
    from .loop import Trainer
    from .selfdistill import generate_data, shard_seconds
    from .shards import DataMismatch, ShardData, check_or_write_meta

    t0 = time.time()
    work = cfg.resolved_work_dir()
    work.mkdir(parents=True, exist_ok=True)
    try:
        target = load_target(cfg.target, dtype=target_dtype, device=device)
    except CheckpointError as e:
        raise TrainError(str(e)) from e
    hf_cfg = target.config
    tok = load_tokenizer(cfg.target)
    stops = stop_token_ids(cfg.target, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (stops[0] if stops else 0)
    try:
        prompts = load_prompts(cfg.corpus, tok, cfg.num_prompts, cfg.prompt_tokens, cfg.chat, cfg.seed)
    except CorpusError as e:
        raise TrainError(str(e)) from e
    if len(prompts) <= cfg.eval_prompts:
        raise TrainError(f"the corpus yields {len(prompts)} prompts; --eval-prompts {cfg.eval_prompts} leaves none to train on")
    eval_prompts, train_prompts = prompts[: cfg.eval_prompts], prompts[cfg.eval_prompts :]

    settings = cfg.to_dict()
    meta = {k: settings[k] for k in TrainConfig.DATA_KEYS}
    meta.update(target_dtype=target_dtype, hidden_size=hf_cfg.hidden_size, vocab_size=hf_cfg.vocab_size,
                train_prompts=len(train_prompts))
    data_dir = work / "data"
    try:
        check_or_write_meta(data_dir, meta)
    except DataMismatch as e:
        raise TrainError(str(e)) from e
    n_shards = generate_data(target.hf, train_prompts, cfg, data_dir, stops, pad_id, device)
    t_data = time.time() - t0

    save_dtype = cfg.save_dtype
    if save_dtype == "auto":
        save_dtype = str(getattr(hf_cfg, "torch_dtype", None) or getattr(hf_cfg, "dtype", None) or "float32")
        save_dtype = save_dtype.replace("torch.", "")
        if save_dtype not in ("float32", "float16", "bfloat16"):
            save_dtype = "float32"
    dcfg = drafter_config(hf_cfg, cfg.intermediate_size, save_dtype)
    # Only the LM head and the embedding are needed from here on: free the target's layers.
    lm_head = torch.nn.Linear(hf_cfg.hidden_size, hf_cfg.vocab_size, bias=False)
    lm_head.weight = torch.nn.Parameter(target.lm_head.weight.detach().float().clone(), requires_grad=False)
    lm_head = lm_head.to(device)
    drafter = new_drafter(dcfg, target.embed_tokens.weight.detach(), cfg.seed, device)
    del target
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    fingerprint = {k: settings[k] for k in settings if k not in _FREE_KEYS}
    fingerprint["drafter_config"] = {k: v for k, v in dcfg.items() if k != "torch_dtype"}
    trainer = Trainer(drafter, lm_head, ShardData(data_dir, n_shards), cfg, device, work, fingerprint)
    result = trainer.run()
    report = {"settings": settings, "drafter_config": dcfg, "data": {"shards": n_shards, "sequences": len(trainer.data),
              "train_prompts": len(train_prompts)}, **result}
    if result["stopped"]:
        return report
    t_train = time.time() - t0 - t_data
    out = write_drafter(drafter, dcfg, Path(cfg.out), cfg.weights_format, cfg.include_embedding)
    report["out"] = str(out)
    report["token_counts"] = _write_token_counts(trainer.data, hf_cfg.vocab_size, out, len(train_prompts))
    if cfg.eval_prompts:
        from .evaluate import measure_tau

        report["eval"] = measure_tau(Path(cfg.target), out, eval_prompts, cfg.eval_new_tokens, tuple(cfg.tree),
                                     device=device.type, dtype=target_dtype, progress=not cfg.quiet)
        report["eval"].pop("outputs")
        print(f"tau {report['eval']['mean_tau']:.2f} (tokens per target forward, tree {tuple(cfg.tree)}, "
              f"{cfg.eval_prompts} held-out prompts, greedy)", file=sys.stderr)
    report["seconds"] = {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.time() - t0, 1)}
    # Across every (resumed) invocation: the data shards' and the stages' own wall times.
    report["seconds_all_runs"] = {"data": round(sum(shard_seconds(data_dir).values()), 1),
                                  **{f"stage_{i + 1}": round(s, 1) for i, s in enumerate(trainer.seconds)}}
    if "eval" in report:
        report["seconds_all_runs"]["eval"] = round(report["eval"]["seconds"], 1)
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"drafter written to {out}; report: {work / 'report.json'}", file=sys.stderr)
    return report


def _write_token_counts(data, vocab_size: int, out: Path, n_prompts: int) -> dict:
    """out/token_counts.json: the target's output frequencies in the training data, for a recipe's
    `[model] draft_vocab` (the drafter then drafts among the most frequent ids only)."""
    from ..models.draft_vocab import coverage, write_token_counts

    counts = data.token_counts(vocab_size)
    path = write_token_counts(out / TOKEN_COUNTS, counts,
                              f"griffin-trt train: the target's continuations of {n_prompts} training prompts")
    cov = coverage(counts, (1024, 4096, 8192, 16384, 32768))
    return {"file": path.name, "counted_tokens": sum(counts), "ids_seen": sum(c > 0 for c in counts),
            "top_n_coverage": {str(n): round(c, 4) for n, c in cov.items()}}


TOKEN_COUNTS = "token_counts.json"

# Settings that may change between a run and its resumption without changing what is trained.
_FREE_KEYS = {"work_dir", "out", "checkpoint_every", "stop_after", "quiet", "eval_prompts", "eval_new_tokens",
              "tree", "weights_format", "include_embedding", "save_dtype", "threads", "device", "gen_batch"}
