#!/usr/bin/env python
"""Train the embedded demo pair: a tiny LLaMA target and a GRIFFIN drafter for it, on CPU.

    python scripts/train_demo.py                 # writes griffin_trt/demo/{target,drafter}/ + README.md
    python scripts/train_demo.py --quick --out /tmp/demo   # seconds-long smoke run (tests)

Corpus: the Python standard library's own .py sources (every machine has them); a fixed list of
modules is held out for evaluation. Everything is seeded and runs with a fixed thread count and
deterministic algorithms, so the same Python/torch versions reproduce the same files.

Steps:
  1. byte-level BPE tokenizer (`tokenizers`), wrapped as a PreTrainedTokenizerFast;
  2. target: LlamaForCausalLM trained with plain next-token cross-entropy, stored as float16 and
     used from then on exactly as stored (rounded weights, float32 compute);
  3. drafter data: corpus windows plus the target's own greedy continuations (self-distillation),
     with the target's final-norm features;
  4. drafter stage 1 (GRIFFIN): SmoothL1(regressed feature, h_(t+1)) + 0.1 x soft cross-entropy
     against the target's distribution at t+1, uniform noise on the input features;
  5. drafter stage 2: multi-pass alignment (the drafter is fed its own regressed features), with
     GRIFFIN's loss masking (a chain whose true next token left the drafter's top-3 is dropped);
  6. evaluation through `griffin_trt.models.load_pair` on the written files: held-out target loss
     and acceptance proxies along the target's own greedy continuations.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import sysconfig
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

# Passive OpenMP waiting: spinning threads cost a lot when the 2 cores are shared with other work.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from griffin_trt.demo.heldout import HELD_OUT  # noqa: E402  (one list for training and evaluation)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL = [BOS, EOS, PAD]  # ids 0, 1, 2
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:\n{% endif %}"
)
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


@dataclass
class Settings:
    seed: int = 1234
    corpus_chars: int = 6_000_000
    max_file_chars: int = 150_000
    vocab_size: int = 2048
    # target
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 704
    max_positions: int = 1024
    seq_len: int = 384
    batch: int = 8
    target_steps: int = 240
    target_lr: float = 3e-3
    # drafter
    d_intermediate: int = 768
    d_seq_len: int = 256
    n_corpus_seqs: int = 512
    n_gen_seqs: int = 512
    gen_prompt: int = 64
    d_batch: int = 16
    stage1_steps: int = 300
    stage1_lr: float = 3e-3
    stage2_steps: int = 80
    stage2_lr: float = 1e-3
    stage2_passes: int = 3
    noise: float = 0.1  # uniform noise amplitude, relative to the feature RMS
    # evaluation
    eval_prompt: int = 128
    eval_new: int = 128
    eval_windows_per_file: int = 2
    tree_starts_per_seq: int = 8
    depth: int = 5
    top_k: int = 10
    total_tokens: int = 60


def quick_settings() -> Settings:
    return Settings(
        corpus_chars=300_000, vocab_size=384, hidden=64, layers=2, heads=2, kv_heads=1, intermediate=128,
        max_positions=256, seq_len=64, batch=8, target_steps=12, d_intermediate=128, d_seq_len=48,
        n_corpus_seqs=16, n_gen_seqs=16, gen_prompt=16, d_batch=8, stage1_steps=8, stage2_steps=4,
        eval_prompt=24, eval_new=24, eval_windows_per_file=1, total_tokens=20,
        tree_starts_per_seq=2,
    )


def log(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------- corpus


def stdlib_files() -> tuple[Path, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("test"))
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith("test"):
                out.append(Path(dirpath, f).relative_to(root).as_posix())
    return root, sorted(out)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def load_corpus(s: Settings) -> tuple[list[str], list[str], list[str]]:
    """(train file names, train texts, held-out texts). Train files: a spread, size-capped subset."""
    root, files = stdlib_files()
    held = [f for f in HELD_OUT if f in files]
    rest = [f for f in files if f not in held]
    # spread the subset over the whole library (not an alphabetical prefix), deterministically
    rest.sort(key=lambda f: (zlib.crc32(f.encode()), f))
    chosen, total = [], 0
    for f in rest:
        text = read_text(root / f)
        if not text.strip() or len(text) > s.max_file_chars:
            continue
        if total + len(text) > s.corpus_chars:
            continue
        chosen.append((f, text))
        total += len(text)
    chosen.sort()
    held_texts = [read_text(root / f) for f in held]
    return [f for f, _ in chosen], [t for _, t in chosen], held_texts


# -------------------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], s: Settings):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=s.vocab_size, min_frequency=2, special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    assert [tok.token_to_id(t) for t in SPECIAL] == [BOS_ID, EOS_ID, PAD_ID]
    raw = Tokenizer.from_str(tok.to_str())  # the bare one (no BOS added) for our data pipeline
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        model_max_length=s.max_positions, clean_up_tokenization_spaces=False,
    )
    hf.chat_template = CHAT_TEMPLATE
    return raw, hf


def encode_docs(raw, texts: list[str]) -> list[torch.Tensor]:
    encs = raw.encode_batch(texts)
    return [torch.tensor([BOS_ID] + e.ids + [EOS_ID], dtype=torch.long) for e in encs]


def sample_windows(stream: torch.Tensor, n: int, length: int, g: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, stream.numel() - length, (n,), generator=g)
    return torch.stack([stream[i : i + length] for i in starts.tolist()])


# ----------------------------------------------------------------------------------------- target


def make_target(s: Settings):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=s.vocab_size, hidden_size=s.hidden, intermediate_size=s.intermediate,
        num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
        max_position_embeddings=s.max_positions, rms_norm_eps=1e-6, rope_theta=10000.0,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def train_target(model, stream: torch.Tensor, s: Settings, g: torch.Generator) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.target_lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, s.target_steps // 12)
    ema = None
    bar = tqdm(range(s.target_steps), desc="target", mininterval=2.0, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s.target_steps, s.target_lr, warmup)
        x = sample_windows(stream, s.batch, s.seq_len, g)
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
    model.eval()
    return ema


@torch.no_grad()
def greedy_continue(model, prompts: torch.Tensor, n_new: int) -> torch.Tensor:
    """The target's greedy continuation (HF model with its own KV cache); [B, P + n_new]."""
    out = model(input_ids=prompts, use_cache=True)
    past, seq = out.past_key_values, [prompts]
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    for i in range(n_new):
        seq.append(nxt)
        if i == n_new - 1:
            break
        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
        past = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    return torch.cat(seq, dim=1)


@torch.no_grad()
def target_features(model, seqs: torch.Tensor, bs: int = 32) -> torch.Tensor:
    """Final-norm hidden states (the LM head's input) for every position."""
    out = []
    for i in range(0, seqs.shape[0], bs):
        out.append(model.model(input_ids=seqs[i : i + bs]).last_hidden_state)
    return torch.cat(out)


# ---------------------------------------------------------------------------------------- drafter


def drafter_config(s: Settings) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "intermediate_size": s.d_intermediate,
        "initializer_range": 0.02,
        "max_position_embeddings": s.max_positions,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.heads,  # GRIFFIN drafters: kv heads = query heads, even for GQA targets
        "num_hidden_layers": 1,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "vocab_size": s.vocab_size,
    }


def pass_masks(T: int, passes: int) -> list[torch.Tensor]:
    """Attention masks [T, passes*T] for multi-pass drafting over one sequence.

    Slot block k (0-based) holds the keys of pass k+1. Pass j at position t continues the chain whose
    last real target feature is at s = t-j+1: it sees pass-1 entries 0..s, then one entry of each
    later pass (s+1 from pass 2, ..., t from pass j) -- exactly the drafter's cache at inference.
    """
    t = torch.arange(T)[:, None]
    u = torch.arange(T)[None, :]
    out = []
    for j in range(1, passes + 1):
        m = torch.zeros(T, passes * T, dtype=torch.bool)
        m[:, :T] = u <= t - j + 1
        for k in range(2, j + 1):
            m[:, (k - 1) * T : k * T] = u == t - j + k
        out.append(m)
    return out


def multipass(drafter, lm_head, feats, tokens, passes: int, masks, noise: float = 0.0, g=None):
    """Run `passes` drafter passes over [B, T] (features h_t, tokens x_(t+1)); yields (logits, regress).

    Pass 1 uses the real features (plus optional uniform noise); pass j >= 2 at position t uses the
    regressed feature pass j-1 produced at t-1.
    """
    B, T, _ = feats.shape
    pos = torch.arange(T).expand(B, T)
    k_cache, v_cache = drafter.new_cache(B, passes * T)
    x = feats
    if noise:
        rms = feats.pow(2).mean().sqrt()
        x = feats + (torch.rand(feats.shape, generator=g) - 0.5) * 2 * noise * rms
    outs = []
    for j in range(1, passes + 1):
        if j > 1:
            x = torch.cat((feats[:, :1], regress[:, :-1]), dim=1)
        hidden, regress, k_cache, v_cache = drafter(
            x, tokens, pos, pos + (j - 1) * T, masks[j - 1].expand(B, -1, -1), k_cache, v_cache
        )
        outs.append((lm_head(hidden), regress))
    return outs


def train_drafter(drafter, lm_head, feats, seqs, s: Settings, passes: int, steps: int, lr: float, g, desc):
    """GRIFFIN loss over `passes` passes; returns EMAs of (total, regression, soft CE, top-1 acc)."""
    params = [p for n, p in drafter.named_parameters() if n != "embed_tokens.weight"]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    T = seqs.shape[1] - 1
    masks = pass_masks(T, passes)
    warmup = max(1, steps // 10)
    ema = None
    drafter.train()
    bar = tqdm(range(steps), desc=desc, mininterval=2.0, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(0, seqs.shape[0], (s.d_batch,), generator=g)
        h, x = feats[idx], seqs[idx]
        f_in, tok_in, h_next = h[:, :-1], x[:, 1:], h[:, 1:]
        with torch.no_grad():
            p_next = torch.softmax(lm_head(h_next), dim=-1)
            best = p_next.argmax(-1)
        outs = multipass(drafter, lm_head, f_in, tok_in, passes, masks, s.noise, g)
        keep = torch.ones(T, dtype=torch.bool).expand(s.d_batch, T)
        total = vtot = ptot = 0.0
        acc = None
        for j, (logits, regress) in enumerate(outs, start=1):
            valid = keep & (torch.arange(T) >= j - 1)
            w = valid.float()
            vloss = F.smooth_l1_loss(regress, h_next, reduction="none").mean(-1)
            logp = torch.log_softmax(logits, dim=-1)
            ploss = -(p_next * logp).sum(-1)
            denom = w.sum().clamp(min=1.0)
            v, p = (vloss * w).sum() / denom, (ploss * w).sum() / denom
            total = total + v + 0.1 * p
            vtot, ptot = vtot + v.item() / passes, ptot + p.item() / passes
            with torch.no_grad():
                top3 = logits.topk(3, dim=-1).indices
                hit = (top3 == best[..., None]).any(-1)
                if acc is None:
                    acc = ((top3[..., 0] == best).float() * w).sum().item() / denom.item()
                # GRIFFIN's loss masking: the chain through (t-1) survives into pass j+1 at t only
                # if the target's next token was within this pass's top-3 there.
                keep = torch.cat((torch.zeros_like(keep[:, :1]), (keep & hit)[:, :-1]), dim=1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        vals = (total.item(), vtot, ptot, acc)
        ema = vals if ema is None else tuple(0.9 * a + 0.1 * b for a, b in zip(ema, vals))
        bar.set_postfix(loss=f"{ema[0]:.3f}", reg=f"{ema[1]:.3f}", ce=f"{ema[2]:.3f}", acc1=f"{ema[3]:.3f}")
    drafter.eval()
    return dict(zip(("loss", "regression", "soft_ce", "top1_acc"), ema))


# ------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate(pair, raw, held_texts: list[str], s: Settings, g: torch.Generator) -> dict:
    """Held-out target loss, and acceptance proxies along the target's greedy continuations.

    chain proxy: from every verified prefix of the continuation, the drafter drafts a chain of `depth`
    tokens (top-1 each pass, own regressed features after the first); accepted = the longest prefix
    equal to the target's greedy tokens; tau = accepted + 1 (bonus). topk-chain proxy: the same where a
    draft token counts if the target's token is within the drafter's top-k at each step
    (optimistic: ignores the tree's token budget). tree proxy: a simulation of the dynamic tree
    (top_k, depth, total_tokens) from each prefix with greedy verification.
    """
    target, drafter = pair.target, pair.drafter
    L = s.eval_prompt + s.eval_new
    prompts = []
    for text in held_texts:
        ids = raw.encode(text).ids
        if len(ids) < s.eval_prompt + 2:
            continue
        ids = torch.tensor([BOS_ID] + ids)
        for _ in range(s.eval_windows_per_file):
            start = int(torch.randint(0, max(1, ids.numel() - s.eval_prompt), (1,), generator=g))
            prompts.append(ids[start : start + s.eval_prompt])
    prompts = torch.stack(prompts)
    B = prompts.shape[0]
    # held-out next-token loss (teacher forced, on real text)
    real = [encode_docs(raw, [t])[0] for t in held_texts]
    real = torch.cat(real)
    n_win = max(1, min(64, real.numel() // L))
    wins = real[: n_win * L].view(n_win, L)
    logits = target.hf(input_ids=wins).logits
    held_loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), wins[:, 1:].reshape(-1)).item()

    seqs = greedy_continue(target.hf, prompts, s.eval_new)  # [B, L]
    # features through our TargetModel wrapper (the runtime's code path), checked against HF's
    pos = torch.arange(L).expand(B, L)
    causal = torch.ones(L, L, dtype=torch.bool).tril().expand(B, L, L)
    kc, vc = target.new_cache(B, L)
    t_logits, feats, _, _ = target(seqs, pos, pos, causal, kc, vc)
    hf_feats = target.hf.model(input_ids=seqs).last_hidden_state
    feat_err = (feats - hf_feats).abs().max().item()
    assert feat_err < 1e-3, f"TargetModel features differ from HF's by {feat_err}"
    greedy = t_logits.argmax(-1)  # greedy[:, t] = the target's next token after position t
    # cached (generation) vs full-sequence argmax: only near-ties can differ
    mismatch = (greedy[:, s.eval_prompt - 1 : -1] != seqs[:, s.eval_prompt :]).float().mean().item()

    # chain proxies: pass j at position t continues the chain from prefix end n = t - j + 2.
    # depth d gives d + 1 drafter passes (the root's children, then d expansions): up to d + 2 tokens.
    D = s.depth + 1
    T = L - 1
    outs = multipass(drafter, target.lm_head, feats[:, :-1], seqs[:, 1:], D, pass_masks(T, D))
    starts = range(s.eval_prompt, L - D)  # prefix x_0..x_n, next D tokens known
    top1_hits, topk_hits = [], []
    for j, (lg, _) in enumerate(outs, start=1):
        tk = lg.topk(s.top_k, dim=-1).indices  # [B, T, k]
        col = [n - 2 + j for n in starts]  # position of pass j in the chain from n
        want = seqs[:, [n + j for n in starts]]
        top1_hits.append(tk[:, col, 0] == want)
        topk_hits.append((tk[:, col] == want[..., None]).any(-1))
    top1 = torch.stack(top1_hits, -1).int().cumprod(-1).sum(-1).float()
    topk = torch.stack(topk_hits, -1).int().cumprod(-1).sum(-1).float()
    per_depth = torch.stack(top1_hits, -1).int().cumprod(-1).float().mean((0, 1)).tolist()

    tree = tree_proxy(pair, seqs, feats, s, per_seq=s.tree_starts_per_seq)
    return {
        "held_out_target_loss": held_loss,
        "eval_sequences": B,
        "chain_tau_top1": 1 + top1.mean().item(),
        "chain_tau_topk_optimistic": 1 + topk.mean().item(),
        "chain_accept_by_depth": per_depth,
        "tree_tau": tree,
        "feature_max_abs_diff_vs_hf": feat_err,
        "cached_vs_full_greedy_mismatch": mismatch,
    }


@torch.no_grad()
def tree_proxy(pair, seqs: torch.Tensor, feats: torch.Tensor, s: Settings, per_seq: int = 8) -> float:
    """EAGLE-2 dynamic tree from sampled prefixes, verified greedily against the target's continuation.

    Expansion: each pass expands the frontier's top_k children; the frontier is the global top_k by
    cumulative log-prob. The best total_tokens-1 nodes (parents kept, ties broken by creation order)
    form the tree; accepted = the longest root path matching the target's greedy tokens (which are
    the known continuation), tau = accepted + 1. Fresh drafter cache per prefix; simple, not fast.
    """
    drafter, lm_head = pair.drafter, pair.target.lm_head
    B, L = seqs.shape
    k, D, budget = s.top_k, s.depth + 1, s.total_tokens - 1  # D = the deepest draft level
    starts = list(range(s.eval_prompt, L - D - 1, max(1, (L - D - 1 - s.eval_prompt) // per_seq)))[:per_seq]
    taus = []
    cap = L + 1 + D * k
    for b in range(B):
        for n in starts:
            # prefix: drafter entries for positions 0..n-1 with real features (input (h_t, x_(t+1)))
            kc, vc = drafter.new_cache(1, cap)
            P = n
            pos = torch.arange(P)[None]
            mask = torch.ones(P, P, dtype=torch.bool).tril()[None]
            mask = torch.cat((mask, torch.zeros(1, P, cap - P, dtype=torch.bool)), -1)
            hid, reg, kc, vc = drafter(feats[b : b + 1, :P], seqs[b : b + 1, 1 : P + 1], pos, pos, mask, kc, vc)
            logp = torch.log_softmax(lm_head(hid[:, -1]), -1)[0]
            v, ids = logp.topk(k)
            # nodes: (score, token, parent index or -1 for the root's children, depth, regressed feature)
            nodes = [(v[i].item(), ids[i].item(), -1, 1) for i in range(k)]
            slot_of = {}
            frontier = list(range(k))
            parent_reg = {i: reg[0, -1] for i in range(k)}
            for depth in range(2, D + 1):
                # one pass over the frontier: each attends to the prefix and its ancestors' entries
                F_ = len(frontier)
                x_feat = torch.stack([parent_reg[i] for i in frontier])[None]
                x_tok = torch.tensor([[nodes[i][1] for i in frontier]])
                base = P + (depth - 2) * k
                write = torch.arange(base, base + F_)[None]
                ppos = torch.full((1, F_), n + depth - 2)
                m = torch.zeros(1, F_, cap, dtype=torch.bool)
                m[0, :, :P] = True
                for r, i in enumerate(frontier):
                    slot_of[i] = base + r
                    a = i
                    while a != -1:
                        if a in slot_of:
                            m[0, r, slot_of[a]] = True
                        a = nodes[a][2]
                hid, reg, kc, vc = drafter(x_feat, x_tok, ppos, write, m, kc, vc)
                lp = torch.log_softmax(lm_head(hid[0]), -1)
                cv, cid = lp.topk(k, -1)
                cands = []
                for r, i in enumerate(frontier):
                    for c in range(k):
                        nodes.append((nodes[i][0] + cv[r, c].item(), cid[r, c].item(), i, depth))
                        cands.append(len(nodes) - 1)
                        parent_reg[len(nodes) - 1] = reg[0, r]
                cands.sort(key=lambda i: (-nodes[i][0], i))
                frontier = cands[:k]
            order = sorted(range(len(nodes)), key=lambda i: (-nodes[i][0], i))
            kept = set()
            for i in order:
                if len(kept) >= budget:
                    break
                if nodes[i][2] == -1 or nodes[i][2] in kept:
                    kept.add(i)
            # greedy verification along the known continuation
            acc, cur = 0, -1
            while True:
                want = seqs[b, n + acc + 1].item() if n + acc + 1 < L else None
                nxt = [i for i in kept if nodes[i][2] == cur and nodes[i][1] == want]
                if not nxt:
                    break
                cur, acc = nxt[0], acc + 1
            taus.append(acc + 1)
    return sum(taus) / len(taus)


# ------------------------------------------------------------------------------------------- main


def save_drafter(drafter, folder: Path, s: Settings) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in drafter.state_dict().items()}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(drafter_config(s), indent=2) + "\n")


def round_fp16_(module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.float16).to(p.dtype))


def write_readme(out: Path, s: Settings, info: dict) -> None:
    e = info["eval"]
    text = f"""# The embedded demo pair

`target/` and `drafter/` were made by `python scripts/train_demo.py{' --quick' if info['quick'] else ''}` on CPU
({info['threads']} threads, {info['minutes']:.1f} min wall clock, torch {info['torch']}, Python {info['python']}).

- **Corpus**: the Python {info['python']} standard library's own `.py` sources (`sysconfig` stdlib path, test
  directories and `site-packages` skipped): {info['train_files']} files, {info['train_chars'] / 1e6:.1f} M characters,
  {info['train_tokens'] / 1e6:.2f} M tokens. Held out for evaluation: {', '.join(info['held_out'])}.
- **Tokenizer**: byte-level BPE (`tokenizers`), vocab {s.vocab_size}, `<s>`=0 (BOS), `</s>`=1 (EOS), `<pad>`=2, with a minimal chat template.
- **Target**: LLaMA, hidden {s.hidden}, {s.layers} layers, {s.heads} heads / {s.kv_heads} KV heads, intermediate {s.intermediate},
  {info['target_params'] / 1e6:.2f} M parameters; next-token cross-entropy, {s.target_steps} steps x {s.batch} x {s.seq_len} tokens,
  final train loss {info['target_loss']:.3f}, held-out loss {e['held_out_target_loss']:.3f}.
- **Drafter**: GRIFFIN (one layer, token-guided fusion), intermediate {s.d_intermediate}, {s.heads} heads = KV heads,
  {info['drafter_params'] / 1e6:.2f} M parameters (embedding a frozen copy of the target's). Data: {s.n_corpus_seqs} corpus windows +
  {s.n_gen_seqs} greedy continuations of the target ({s.d_seq_len} tokens each) with its final-norm features.
  Stage 1 ({s.stage1_steps} steps): SmoothL1 on the regressed feature + 0.1 x soft cross-entropy, uniform feature
  noise; final loss {info['stage1']['loss']:.3f} (regression {info['stage1']['regression']:.3f}, CE {info['stage1']['soft_ce']:.3f}).
  Stage 2 ({s.stage2_steps} steps, {s.stage2_passes} passes on its own regressed features, top-3 loss masking):
  final loss {info['stage2']['loss']:.3f} (regression {info['stage2']['regression']:.3f}, CE {info['stage2']['soft_ce']:.3f}).
- **Files**: float16 safetensors (the loaders upcast), target {info['target_bytes'] / 1e6:.1f} MB + drafter {info['drafter_bytes'] / 1e6:.1f} MB. Seed {s.seed}.
- **Acceptance proxies** on {e['eval_sequences']} held-out prompts x {s.eval_new} greedy tokens (tokens per target forward,
  bonus included): top-1 chain {e['chain_tau_top1']:.2f}; dynamic tree (top_k {s.top_k}, depth {s.depth}, total_tokens
  {s.total_tokens}, simulated) {e['tree_tau']:.2f}; top-{s.top_k} chain (optimistic bound) {e['chain_tau_topk_optimistic']:.2f}.

Other Python versions have other stdlib sources, so they train a slightly different pair; the same
versions reproduce these files.
"""
    (out / "README.md").write_text(text)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "griffin_trt" / "demo")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds-long smoke run")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    s = quick_settings() if args.quick else Settings()
    if args.seed is not None:
        s.seed = args.seed
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(s.seed)
    g = torch.Generator().manual_seed(s.seed)
    t0 = time.time()
    out = args.out
    tdir, ddir = out / "target", out / "drafter"

    from transformers import GenerationConfig

    from griffin_trt.models import GriffinDrafter, load_pair, load_tokenizer
    from griffin_trt.models.drafter import DrafterConfig

    # 1. corpus + tokenizer
    names, texts, held = load_corpus(s)
    raw, hf_tok = train_tokenizer(texts, s)
    docs = encode_docs(raw, texts)
    stream = torch.cat(docs)
    log(f"corpus: {len(names)} files, {sum(map(len, texts)) / 1e6:.2f} M chars, {stream.numel() / 1e6:.2f} M tokens "
        f"({time.time() - t0:.0f} s)")

    # 2. target
    target = make_target(s)
    target_params = sum(p.numel() for p in target.parameters())
    target_loss = train_target(target, stream, s, g)
    round_fp16_(target)  # from here on the target is exactly what the float16 files hold
    target.requires_grad_(False)
    tdir.mkdir(parents=True, exist_ok=True)
    target.generation_config = GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, do_sample=False, max_length=s.max_positions
    )
    target.to(torch.float16).save_pretrained(tdir)
    target.to(torch.float32)
    hf_tok.save_pretrained(tdir)
    log(f"target: {target_params / 1e6:.2f} M params, loss {target_loss:.3f} ({time.time() - t0:.0f} s)")

    # 3. drafter data: corpus windows + the target's greedy continuations of corpus prompts
    Td = s.d_seq_len
    corpus_seqs = sample_windows(stream, s.n_corpus_seqs, Td, g)
    gen_prompts = sample_windows(stream, s.n_gen_seqs, s.gen_prompt, g)
    gen = []
    for i in tqdm(range(0, s.n_gen_seqs, 64), desc="self-distill", mininterval=2.0, dynamic_ncols=True):
        gen.append(greedy_continue(target, gen_prompts[i : i + 64], Td - s.gen_prompt))
    seqs = torch.cat([corpus_seqs] + gen)
    feats = target_features(target, seqs)
    log(f"drafter data: {seqs.shape[0]} x {Td} tokens ({time.time() - t0:.0f} s)")

    # 4-5. drafter
    dcfg = DrafterConfig.from_dict(drafter_config(s))
    drafter = GriffinDrafter(dcfg)
    with torch.no_grad():
        drafter.embed_tokens.weight.copy_(target.model.embed_tokens.weight)
        drafter.fc.fc.bias.zero_()
    drafter.embed_tokens.weight.requires_grad_(False)
    drafter.inplace = False
    drafter_params = sum(p.numel() for p in drafter.parameters())
    lm_head = target.lm_head
    stage1 = train_drafter(drafter, lm_head, feats, seqs, s, 1, s.stage1_steps, s.stage1_lr, g, "drafter stage 1")
    log(f"drafter stage 1: {stage1} ({time.time() - t0:.0f} s)")
    stage2 = train_drafter(
        drafter, lm_head, feats, seqs, s, s.stage2_passes, s.stage2_steps, s.stage2_lr, g, "drafter stage 2"
    )
    log(f"drafter stage 2: {stage2} ({time.time() - t0:.0f} s)")
    save_drafter(drafter, ddir, s)

    # 6. evaluation on the written files, through the project's loaders
    pair = load_pair(tdir, ddir, top_k=s.top_k)
    tok = load_tokenizer(tdir)
    assert tok.eos_token_id == EOS_ID == pair.target.config.eos_token_id
    assert tok("x").input_ids[0] == BOS_ID
    loaded_embed = pair.drafter.embed_tokens.weight
    assert torch.equal(loaded_embed, pair.target.embed_tokens.weight)
    for name, p in drafter.state_dict().items():  # float16 round trip
        q = pair.drafter.state_dict()[name]
        assert torch.allclose(p.to(torch.float16).float(), q), name
    ev = evaluate(pair, raw, held, s, g)
    minutes = (time.time() - t0) / 60
    info = {
        "quick": args.quick,
        "threads": args.threads,
        "minutes": minutes,
        "torch": torch.__version__.split("+")[0],
        "python": ".".join(map(str, sys.version_info[:2])),
        "train_files": len(names),
        "train_chars": sum(map(len, texts)),
        "train_tokens": stream.numel(),
        "held_out": [f for f in HELD_OUT],
        "target_params": target_params,
        "drafter_params": drafter_params,
        "target_loss": target_loss,
        "stage1": stage1,
        "stage2": stage2,
        "target_bytes": (tdir / "model.safetensors").stat().st_size,
        "drafter_bytes": (ddir / "model.safetensors").stat().st_size,
        "eval": ev,
        "settings": asdict(s),
    }
    write_readme(out, s, info)
    log("")
    log(f"done in {minutes:.1f} min -> {out}")
    log(f"  target  loss {target_loss:.3f} (held-out {ev['held_out_target_loss']:.3f}), "
        f"{info['target_bytes'] / 1e6:.1f} MB")
    log(f"  drafter stage 1 loss {stage1['loss']:.3f}, stage 2 loss {stage2['loss']:.3f}, "
        f"{info['drafter_bytes'] / 1e6:.1f} MB")
    log(f"  acceptance proxies (tokens/target forward): top-1 chain {ev['chain_tau_top1']:.2f}, "
        f"tree {ev['tree_tau']:.2f}, top-{s.top_k} chain (optimistic) {ev['chain_tau_topk_optimistic']:.2f}")
    log(f"  top-1 chain acceptance by depth: {[round(x, 3) for x in ev['chain_accept_by_depth']]}")
    return info


if __name__ == "__main__":
    main()
