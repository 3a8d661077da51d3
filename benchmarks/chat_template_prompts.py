"""Write a prompt file with every prompt wrapped in the target's chat template (one user turn).

gRPC clients send the text a model reads, as with TensorRT-LLM's ensemble: a chat client applies
the template itself. This makes such a file for `griffin-trt bench --prompts` and for
bench_speculative.py from plain prompts (id, category, prompt per line). Prompts come out round-robin
over the categories, so the first N of the file (`--num-prompts N`) cover every category:

    python benchmarks/chat_template_prompts.py --recipe build/smollm2-135m.toml \\
        --prompts benchmarks/prompts/chat_heldout.jsonl --out /tmp/chat_heldout.templated.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--prompts", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from griffin_trt.models import load_tokenizer
    from griffin_trt.recipe import load_recipe

    tok = load_tokenizer(load_recipe(args.recipe, check_paths=False).tokenizer)
    rows = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    by_cat: dict[str, list[dict]] = {}
    for i, r in enumerate(rows):
        by_cat.setdefault(r.get("category", "all"), []).append(dict(r, id=r.get("id", str(i))))
    rows = [q[i] for i in range(max(map(len, by_cat.values()))) for q in by_cat.values() if i < len(q)]
    out = []
    for r in rows:
        text = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True,
                                       tokenize=False)
        out.append({"id": r["id"], "category": r.get("category", "all"), "prompt": text})
    args.out.write_text("".join(json.dumps(r) + "\n" for r in out))
    print(f"wrote {len(out)} chat-templated prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
