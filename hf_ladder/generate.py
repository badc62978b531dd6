"""Decoding: one place that turns (temperature, top_k, top_p) into a `GenerationConfig` and generates.

`temperature == 0` means greedy. `top_k == 0` means no top-k filter: it is passed explicitly, because
transformers falls back to top_k=50 when it is left unset.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GenerationConfig


def generation_config(tokenizer, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, repetition_penalty: float = 1.0) -> GenerationConfig:
    """A complete GenerationConfig: greedy when temperature is 0, else sampling with exactly these filters."""
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
           "bos_token_id": tokenizer.bos_token_id}
    if temperature == 0:
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                                repetition_penalty=repetition_penalty, **ids)
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, **ids)


@torch.no_grad()
def generate(model, tokenizer, prompt: str, config: GenerationConfig, seed: int | None = None) -> tuple[str, float]:
    """Continue `prompt` (batch 1, KV cache on) and score the continuation. The continuation stops at the
    model's context length (a long prompt keeps its end).

    Returns:
        (continuation text without the prompt and special tokens, per-sample loss): the loss is the mean
        negative log-likelihood in nats of the generated tokens under the same model, teacher-forced
        (nan when nothing was generated). Sampling draws from a forked RNG seeded with `seed`, so the
        caller's random state (data order, dropout) is untouched.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(device)
    room = config.max_new_tokens
    if (positions := getattr(model.config, "max_position_embeddings", None)) is not None:
        enc = {k: v[:, -(positions - 1):] for k, v in enc.items()}  # keep the prompt's end, and room for one token
        room = min(room, positions - enc["input_ids"].shape[1])  # never past the model's context
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(**enc, generation_config=config, max_new_tokens=room)  # (1, prompt + new)
    n_prompt = enc["input_ids"].shape[1]
    new = out[0, n_prompt:]
    loss = float("nan")
    if len(new):
        logits = model(input_ids=out).logits[0, n_prompt - 1: -1].float()  # (new, vocab): predicts each new token
        loss = F.cross_entropy(logits, new).item()
    model.train(was_training)
    return tokenizer.decode(new, skip_special_tokens=True), loss
