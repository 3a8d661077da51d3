"""GRIFFIN vs plain decoding through the OpenAI endpoint, with the official `openai` SDK.

Sends the shipped prompt set (griffin_trt/client/prompts.jsonl, as `griffin-trt bench` does) one at a
time as streamed completions, each prompt once per mode (`speculative` true / false), and prints
tokens/s, end-to-end and TTFT medians and how many greedy outputs are equal. Against a running
`griffin-trt serve --openai-port N`:

    python benchmarks/bench_openai.py --url http://127.0.0.1:8003/v1 [--model demo] [--num-prompts 44]
"""
from __future__ import annotations

import argparse
import statistics
import time

from openai import OpenAI

from griffin_trt.client.bench import load_prompts


def run(client: OpenAI, model: str, prompts: list[str], max_tokens: int, speculative: bool) -> dict:
    e2e, ttft, tokens, texts = [], [], 0, []
    for prompt in prompts:
        t0, first, parts = time.perf_counter(), None, []
        for chunk in client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                               stream=True, stream_options={"include_usage": True},
                                               extra_body={"speculative": speculative}):
            if chunk.choices and chunk.choices[0].text:
                first = first or time.perf_counter()
                parts.append(chunk.choices[0].text)
            if chunk.usage:
                tokens += chunk.usage.completion_tokens
        e2e.append(time.perf_counter() - t0)
        ttft.append(first - t0)
        texts.append("".join(parts))
    return {"tok_s": tokens / sum(e2e), "e2e_p50_s": statistics.median(e2e), "ttft_p50_ms": statistics.median(ttft) * 1e3,
            "texts": texts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8003/v1")
    p.add_argument("--model", default="demo")
    p.add_argument("--num-prompts", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    prompts = [r["prompt"] for r in load_prompts(num=args.num_prompts)]
    client = OpenAI(base_url=args.url, api_key="unused", max_retries=0)
    runs = {mode: run(client, args.model, prompts, args.max_tokens, mode == "griffin") for mode in ("griffin", "plain")}
    for mode, r in runs.items():
        print(f"{mode:8s} tok/s {r['tok_s']:.1f}  e2e p50 {r['e2e_p50_s']:.3f} s  TTFT p50 {r['ttft_p50_ms']:.0f} ms")
    same = sum(a == b for a, b in zip(runs["griffin"]["texts"], runs["plain"]["texts"]))
    print(f"griffin/plain tok/s x{runs['griffin']['tok_s'] / runs['plain']['tok_s']:.2f}; "
          f"greedy outputs equal in {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
