"""Building decoders over tiny checkpoints and the reference greedy output to compare with."""
from __future__ import annotations

import torch

from griffin_trt.recipe import Limits, TreeConfig, TreeSchedule
from griffin_trt.runtime import SpeculativeDecoder
from griffin_trt.runtime.executors.torch_executor import TorchExecutor


def make_decoder(target, drafter, tree=TreeConfig(), limits=Limits(max_batch=4, max_input_len=64, max_output_len=64),
                 eos=(), schedule=TreeSchedule(), detokenize=None, executor=None):
    ex = executor or make_executor(target, drafter, tree, limits)
    return SpeculativeDecoder(ex, tree, limits, eos, schedule, detokenize)


def make_executor(target, drafter, tree, limits):
    return TorchExecutor.from_paths(
        target, drafter, top_k=max(tree.top_k, 1),
        target_kv_len=limits.max_seq_len + tree.tree_size,
        drafter_kv_len=limits.max_seq_len + tree.max_accept + tree.drafter_slots,
        max_batch=limits.max_batch,
    )


def hf_greedy(hf_model, prompt: list[int], n: int, eos: int | None = None) -> list[int]:
    """transformers' own greedy generate: the ground truth for lossless decoding."""
    ids = torch.tensor([prompt], device=hf_model.device)
    out = hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, eos_token_id=eos,
        pad_token_id=eos if eos is not None else 0,
        **({} if eos is not None else {"min_new_tokens": n}),
    )[0, len(prompt) :].tolist()
    if eos is not None and eos in out:
        out = out[: out.index(eos) + 1]
    return out


def random_prompts(n: int, vocab: int, seed: int, max_len: int = 24) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, max_len, (n,), generator=g)
    return [torch.randint(0, vocab, (int(l),), generator=g).tolist() for l in lens]
