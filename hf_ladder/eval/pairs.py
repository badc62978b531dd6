"""Scoring prompt / response pairs: summed log-probabilities of responses, preference accuracy, and how
often a model ends its answer by itself.

Tokenization follows TRL's DPO collator (trl/trainer/dpo_trainer.py): the prompt and the response are
tokenized separately and concatenated; eos is appended to the response. Prompts are given as users
write them: the tokenizer's own special tokens (bos, for the ladder's tokenizers) are added to the prompt
here, as the stages add them to the rows they hand to TRL (`hf_ladder.data.tokenizer.with_bos`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_ladder.generate import generate_batch, generation_config
from hf_ladder.modeling import inference


def response_logprobs(model, tokenizer, prompts: list[str], responses: list[str], max_length: int,
                      batch_size: int = 16) -> list[float]:
    """Summed log-probability (nats) of each `response + eos` given its prompt, one float per pair; the
    sequence is cut to its first `max_length` tokens, as TRL's `truncation_mode="keep_start"` does.

    Shapes: each batch is right-padded to (batch, prompt + response) ids; logits (batch, T, vocab) in fp32.
    """
    device = next(model.parameters()).device
    out = []
    with inference(model):
        for i in tqdm(range(0, len(prompts), batch_size), desc="scoring responses", unit="batch", leave=False):
            seqs, starts = [], []
            for p, r in zip(prompts[i: i + batch_size], responses[i: i + batch_size]):
                p_ids = tokenizer(p)["input_ids"]
                r_ids = tokenizer(r + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
                seqs.append((p_ids + r_ids)[:max_length])
                starts.append(len(p_ids))
            width = max(map(len, seqs))
            ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(seqs), width), -100, dtype=torch.long)
            for row, (seq, start) in enumerate(zip(seqs, starts)):
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, start: len(seq)] = torch.tensor(seq[start:], dtype=torch.long)
            attention = (labels != -100) | (torch.arange(width) < torch.tensor(starts)[:, None])
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits.float()  # (B, T, V)
            logp = -F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:].to(device), ignore_index=-100,
                                    reduction="none")  # (B, T-1), 0 where ignored
            out.extend(logp.sum(dim=1).tolist())
    return out


def preference_accuracy(model, tokenizer, rows: list[dict], max_length: int) -> dict[str, float]:
    """How often the model gives the chosen response a higher log-probability than the rejected one.

    Returns:
        {"pref_accuracy": fraction of pairs (ties count half), "pref_logp_margin": mean of
        log p(chosen) - log p(rejected) in nats}.
    """
    prompts = [r["prompt"] for r in rows]
    chosen = response_logprobs(model, tokenizer, prompts, [r["chosen"] for r in rows], max_length)
    rejected = response_logprobs(model, tokenizer, prompts, [r["rejected"] for r in rows], max_length)
    wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]
    return {"pref_accuracy": sum(wins) / len(wins),
            "pref_logp_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(rows)}


def eos_rate(model, tokenizer, prompts: list[str], max_new_tokens: int) -> float:
    """Fraction of prompts whose greedy answer ends with an end token (eos / end of turn) within
    `max_new_tokens`: whether the model learned to stop."""
    config = generation_config(tokenizer, max_new_tokens=max_new_tokens, temperature=0.0)
    samples = generate_batch(model, tokenizer, prompts, config)
    return sum(s.ended for s in samples) / len(samples)
