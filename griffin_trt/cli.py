"""`griffin-trt`: fetch / build / draft-vocab / generate / serve / bench / client / train.

Subcommands live with the code they drive; each module's `register(subparsers)` adds its parser.
Heavy imports (torch, onnx, tritonclient) happen inside the commands, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .recipe import BACKENDS

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "build" / "demo.toml"

# module -> subcommands it registers; a module that is missing on this install is skipped.
COMMAND_MODULES = (
    "griffin_trt.fetch",
    "griffin_trt.builders.build_engines",
    "griffin_trt.builders.token_counts",
    "griffin_trt.serving.server",
    "griffin_trt.client.bench",
    "griffin_trt.client.client",
    "griffin_trt.training.command",
)


def _recipe_from_args(args):
    from .recipe import load_recipe, recipe_from_dict

    if args.target or args.drafter:
        if not (args.target and args.drafter):
            raise SystemExit("error: --target and --drafter go together")
        data = {"model": {"target": str(args.target), "drafter": str(args.drafter)}}
        if args.recipe:
            raise SystemExit("error: give either --recipe or --target/--drafter")
        return recipe_from_dict(data, base=Path.cwd())
    return load_recipe(args.recipe or DEFAULT_RECIPE)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate text with GRIFFIN speculative decoding (or plain decoding)")
    p.add_argument("--recipe", type=Path, help=f"build recipe (default: {DEFAULT_RECIPE.name})")
    p.add_argument("--target", type=Path, help="target checkpoint folder (instead of --recipe)")
    p.add_argument("--drafter", type=Path, help="GRIFFIN drafter folder (with --target)")
    p.add_argument("--prompt", action="append", required=True, help="prompt text (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--end-id", type=int, default=None, help="an extra stop token id (-1: none, as TensorRT-LLM)")
    p.add_argument("--stop", action="append", default=[], help="stop once the text contains this (repeatable)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="default: torch with --target/--drafter, else the recipe's back end if built, else torch")
    p.add_argument("--build-dir", type=Path, default=None, help="output of `griffin-trt build` (default: recipe's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--no-speculation", action="store_true", help="plain autoregressive decoding, same caches")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list for several prompts)")
    p.set_defaults(func=_generate)


def _generate(args) -> int:
    from . import request_rules as rules
    from .runtime import SamplingParams, load_runtime

    recipe = _recipe_from_args(args)
    # The server's rules, the server's messages; checked before any model is loaded.
    sampling = SamplingParams(args.temperature, args.top_p, args.top_k, args.seed)
    sampling.validate()
    max_new = rules.check_max_tokens(args.max_new_tokens, recipe.limits.max_output_len)
    backend = args.backend
    if backend is None:
        built = (Path(args.build_dir or recipe.output_dir) / "manifest.json").is_file()
        backend = recipe.backend if (built and not args.target) else "torch"
    rt = load_runtime(recipe, build_dir=args.build_dir, backend=backend, device=args.device)
    end_id = rules.check_end_id(args.end_id, rt.decoder.ex.spec.vocab_size)
    per_token = rules.max_token_bytes(rt.tokenizer)
    max_in = recipe.limits.max_input_len
    prompts = [
        rules.check_prompt_ids(rt.encode(rules.check_prompt_text(p, max_in, per_token)), max_in, None)
        for p in args.prompt
    ]
    results = rt.decoder.generate(prompts, max_new, sampling, speculative=not args.no_speculation,
                                  stop_ids=None if end_id is None else [end_id],
                                  stop_strings=args.stop)
    out = []
    for r in results:
        d = r.to_dict()
        d["text"] = rt.decode(r.token_ids)
        d["backend"] = backend
        d["speculative"] = not args.no_speculation
        out.append(d)
    if args.json:
        print(json.dumps(out[0] if len(out) == 1 else out))
    else:
        for d in out:
            print(d["text"])
            print(
                f"[{len(d['token_ids'])} tokens, {d['target_forwards']} target forwards, "
                f"acceptance length {d['acceptance_length']:.2f}, ttft {d['ttft_s'] * 1e3:.1f} ms, "
                f"tpot {d['tpot_s'] * 1e3:.2f} ms, backend {backend}]",
                file=sys.stderr,
            )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="griffin-trt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # the module exists but is broken: say so
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    # RecipeError, CheckpointError, RequestError and DeviceError are ValueErrors: bad input gets one clear
    # line, not a traceback.
    except (FileNotFoundError, ValueError) as e:
        print(f"griffin-trt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: each command has cleaned up on the way out (finally blocks)
        print(f"griffin-trt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
