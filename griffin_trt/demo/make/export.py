"""Writing the pre-trained demo target as a Hugging Face LLaMA checkpoint with its tokenizer."""
from __future__ import annotations

from pathlib import Path

import torch

from .lm import LMShape, TrainLM
from .tokenizer import BOS_ID, EOS_ID, PAD_ID


def hf_config(s: LMShape):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads, num_key_value_heads=s.num_kv_heads,
        max_position_embeddings=s.max_positions, rms_norm_eps=s.rms_norm_eps, rope_theta=s.rope_theta,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=False,
    )


def save_target(model: TrainLM, hf_tokenizer, folder: Path) -> None:
    """float16 safetensors (the loaders upcast) + config + generation config + tokenizer."""
    from transformers import GenerationConfig, LlamaForCausalLM

    with torch.device("meta"):
        hf = LlamaForCausalLM(hf_config(model.s))
    state = {k: v.to(torch.float16) for k, v in model.hf_state_dict().items()}
    hf.load_state_dict(state, strict=True, assign=True)
    hf.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False,
        max_length=model.s.max_positions,
    )
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(folder)
    hf_tokenizer.save_pretrained(folder)
