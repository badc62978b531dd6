"""Decoding: one place that turns (temperature, top_k, top_p) into a `GenerationConfig` and generates.

`temperature == 0` means greedy. `top_k == 0` means no top-k filter: it is passed explicitly, because
transformers falls back to top_k=50 when it is left unset.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from hf_ladder.data.chat import end_of_turn_ids
from hf_ladder.eval.loglikelihood import loglikelihood_tokens
from hf_ladder.modeling import context_length, inference


def generation_config(tokenizer, max_new_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0, repetition_penalty: float = 1.0,
                      eos_token_id: int | list[int] | None = None) -> GenerationConfig:
    """A complete GenerationConfig: greedy when temperature is 0, else sampling with exactly these filters;
    it stops at `eos_token_id` (default: the tokenizer's eos and, where it has one, the chat end-of-turn)."""
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": eos_token_id or end_of_turn_ids(tokenizer),
           "bos_token_id": tokenizer.bos_token_id}
    if temperature == 0:  # sampling fields at their neutral defaults: unset ones would come from the model's config
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, temperature=1.0, top_k=50, top_p=1.0,
                                repetition_penalty=repetition_penalty, **ids)
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
                            top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, **ids)


def fit_context(model, enc, config: GenerationConfig):
    """Keep prompt + continuation inside the model's context: a long prompt keeps its end, and
    max_new_tokens shrinks to the room left. Returns (encoding, config)."""
    positions = context_length(model)
    enc = {k: v[:, -(positions - 1):] for k, v in enc.items()}  # (B, <= positions - 1)
    room = positions - enc["input_ids"].shape[1]
    if room < config.max_new_tokens:
        config = copy.deepcopy(config)
        config.max_new_tokens = room
    return enc, config


@dataclass
class Sample:
    text: str  # the continuation, without the prompt and special tokens
    loss: float  # mean nats per generated token under the model (nan when nothing was generated)
    ended: bool  # generation stopped at an end token (eos / end of turn) rather than at the length limit
    tokens: int  # generated tokens, the end token included


def generate(model, tokenizer, prompt: str, config: GenerationConfig, seed: int | None = None) -> Sample:
    """Continue `prompt` (batch 1, KV cache on) and score the continuation. The continuation stops at the
    model's context length (a long prompt keeps its end).

    Returns:
        a `Sample`; its loss is the mean negative log-likelihood in nats of the generated tokens under the
        same model, teacher-forced (the per-sample loss the monitor reads). Sampling draws from a forked RNG
        seeded with `seed`, so the caller's random state (data order, dropout) is untouched.
    """
    device = next(model.parameters()).device
    enc, config = fit_context(model, tokenizer(prompt, return_tensors="pt").to(device), config)
    with inference(model), torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(**enc, generation_config=config)  # (1, prompt + new)
        n_prompt = enc["input_ids"].shape[1]
        new = out[0, n_prompt:]
        loss, = continuation_losses(model, [(out[0, :n_prompt].tolist(), new.tolist())])
    ends = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    return Sample(text=tokenizer.decode(new, skip_special_tokens=True), loss=loss,
                  ended=bool(len(new)) and int(new[-1]) in ends, tokens=len(new))


class GreedyRows(LogitsProcessor):
    """Inside a sampling `generate`, make the rows where `greedy` is True decode greedily: their scores keep only
    the argmax (the first one on a tie, as greedy search's argmax), so temperature and top-k/top-p leave it alone
    and the draw returns it. It runs after the penalties (repetition_penalty), before the warpers, as
    transformers orders a custom processor. Shapes: greedy (B,) bool; scores (B, vocab)."""

    def __init__(self, greedy: torch.Tensor):
        self.greedy = greedy

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        best = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, scores.argmax(-1, keepdim=True), True)
        return scores.masked_fill(self.greedy[:, None] & ~best, -float("inf"))  # (B, vocab)


def generate_batch(model, tokenizer, prompts: list[str], config: GenerationConfig, seed: int | None = None,
                   batch_size: int = 32, greedy: list[bool] | None = None, score: bool = True) -> list[Sample]:
    """`generate` for many prompts at once: left-padded batches, the same decoding and context limit (more
    prompts than `batch_size` go shortest first, so a batch's room for new tokens, the context less its longest
    prompt, is not cut by one long prompt; samples come back in the given order), and each continuation's loss
    under the same model, teacher-forced on exactly the generated ids
    (`hf_ladder.eval.loglikelihood.loglikelihood_tokens`; nan for an empty one, and for every one when `score` is
    False: a caller that only needs the texts skips that forward).
    `greedy` (one flag per prompt, with a sampling `config`) decodes the flagged prompts greedily in the same
    batch (`GreedyRows`): one `generate` call for both decodings.

    Shapes: each batch is (batch, longest prompt) ids, left-padded; outputs (batch, prompt + new).
    """
    device = next(model.parameters()).device
    ends = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    prompts = list(prompts)  # a datasets Column too
    order = list(range(len(prompts)))
    if len(prompts) > batch_size:
        lengths = [len(ids) for ids in tokenizer(prompts, verbose=False)["input_ids"]]
        order.sort(key=lengths.__getitem__)
    samples = []
    try:
        with inference(model), torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            if seed is not None:
                torch.manual_seed(seed)
            for i in tqdm(range(0, len(prompts), batch_size), desc="generating", unit="batch", leave=False,
                          disable=len(prompts) <= batch_size):
                rows = order[i: i + batch_size]
                enc = tokenizer([prompts[j] for j in rows], return_tensors="pt", padding=True).to(device)
                enc, fitted = fit_context(model, enc, config)
                processors = LogitsProcessorList()
                if greedy is not None and config.do_sample:
                    processors.append(GreedyRows(torch.tensor([greedy[j] for j in rows], device=device)))
                out = model.generate(**enc, generation_config=fitted, logits_processor=processors)
                out = out[:, enc["input_ids"].shape[1]:]  # (B, new)
                news = []
                for row in out.tolist():
                    stop = next((j for j, t in enumerate(row) if t in ends), None)
                    news.append(row if stop is None else row[: stop + 1])
                prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
                losses = (continuation_losses(model, list(zip(prompt_ids, news))) if score
                          else [float("nan")] * len(news))
                samples += [Sample(text=tokenizer.decode(new, skip_special_tokens=True), loss=loss,
                                   ended=bool(new) and new[-1] in ends, tokens=len(new))
                            for new, loss in zip(news, losses)]
    finally:
        tokenizer.padding_side = side
    return [sample for _, sample in sorted(zip(order, samples), key=lambda x: x[0])]


def continuation_losses(model, pairs: list[tuple[list[int], list[int]]], tokenizer=None) -> list[float]:
    """Mean negative log-likelihood (nats/token) of each (prompt ids, continuation ids) continuation under `model`,
    teacher-forced on exactly those ids (`hf_ladder.eval.loglikelihood.loglikelihood_tokens`, at the context
    `context_length(model, tokenizer)`); nan where the prompt or the continuation is empty."""
    scored = [i for i, (prompt, new) in enumerate(pairs) if prompt and new]
    lls = loglikelihood_tokens(model, [pairs[i] for i in scored], context_length(model, tokenizer), greedy=False)
    losses = [float("nan")] * len(pairs)
    for i, (ll, _) in zip(scored, lls):
        losses[i] = -ll / len(pairs[i][1])
    return losses
