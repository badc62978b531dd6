"""Exact negative log-likelihood of a whole text: perplexity, bits per character, bits per byte.

Every token of the text is scored exactly once, in lm-evaluation-harness's rolling windows
(`hf_ladder.eval.loglikelihood.rolling_windows` = `lm_eval.utils.get_rolling_token_windows` with
`context_len=1` + `make_disjoint_window`): the first window reads the prefix token (bos, or eos for tokenizers
without one) and the first `block_size - 1` tokens and predicts the first `block_size` tokens; each later full
window predicts the next `block_size` tokens reading from the token just before them; the final partial one
reads up to `block_size` tokens of earlier context. The text is encoded without special tokens (the harness's
`wikitext` would also score a bos our tokenizers add; `loglikelihood_rolling` does that).

Bits per character / byte are tokenizer-independent: total nats over the text / its characters (or UTF-8
bytes) / ln 2 (as lm-eval's `bits_per_byte`, lm_eval/api/metrics.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from hf_ladder.eval.lm_head import head_log_probs
from hf_ladder.eval.loglikelihood import rolling_windows
from hf_ladder.modeling import inference, unwrap_peft


@dataclass
class TextScore:
    nats: float  # summed negative log-likelihood of every token, natural log
    tokens: int
    chars: int
    bytes: int

    @property
    def loss(self) -> float:
        """Mean nats per token (the cross-entropy loss)."""
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_char(self) -> float:
        return self.nats / self.chars / math.log(2)

    @property
    def bits_per_byte(self) -> float:
        return self.nats / self.bytes / math.log(2)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}perplexity": self.perplexity,
                f"{prefix}bits_per_char": self.bits_per_char, f"{prefix}bits_per_byte": self.bits_per_byte,
                f"{prefix}tokens": self.tokens}


def score_text(model, tokenizer, text: str, block_size: int, max_tokens: int = 8192) -> TextScore:
    """Sum the model's negative log-likelihood over every token of `text` (see module docstring).

    Memory is bounded whatever the model: windows are batched by padded tokens (at most `max_tokens` per
    forward, at least one window), and the log-probabilities of the target tokens are taken from the final
    hidden states a tile at a time (`hf_ladder.eval.lm_head.head_log_probs`), never as full-vocabulary
    logits of the whole batch (SmolLM2's 8,192-position windows x 49,152 tokens would be 1.6 GB of fp32 logits
    per window). The per-token log-probs are summed in float64.

    Shapes: each batch is (batch, <= block_size) token ids -> hidden states (batch, T, d) -> the scored
    positions (n, d) -> fp32 log-probs of their targets (n,).

    Raises:
        ValueError: `text` is empty.
    """
    if not text:
        raise ValueError("score_text: the text is empty")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    windows = rolling_windows(ids, prefix, block_size)  # (context, continuation): <= block_size + 1 ids together
    lm = unwrap_peft(model)
    device = next(lm.parameters()).device
    nats, count = 0.0, 0
    with inference(lm):
        for batch in tqdm(list(token_batches(windows, max_tokens)), desc="scoring text", unit="batch", leave=False):
            width = max(len(c) + len(k) for c, k in batch) - 1
            inputs = torch.zeros(len(batch), width, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (context, continuation) in enumerate(batch):
                w = context + continuation
                inputs[row, : len(w) - 1] = torch.tensor(w[:-1])
                labels[row, len(context) - 1: len(w) - 1] = torch.tensor(continuation)  # position t predicts t + 1
            hidden = lm.base_model(input_ids=inputs.to(device)).last_hidden_state  # (B, T, d)
            keep = (labels != -100).to(device)
            targets = labels.to(device)[keep]  # (n,)
            rows = torch.arange(len(targets), device=device)
            log_probs, _ = head_log_probs(lm.get_output_embeddings(), hidden[keep], rows, targets)  # (n,)
            nats -= float(log_probs.double().sum())
            count += len(targets)
    assert count == len(ids), (count, len(ids))
    return TextScore(nats=nats, tokens=count, chars=len(text), bytes=len(text.encode("utf-8")))


def token_batches(windows: list[tuple[list[int], list[int]]], max_tokens: int):
    """Consecutive runs of `windows` whose padded size (rows x longest window) is <= max_tokens (at least one)."""
    batch, longest = [], 0
    for w in windows:
        size = len(w[0]) + len(w[1]) - 1
        if batch and (len(batch) + 1) * max(longest, size) > max_tokens:
            yield batch
            batch, longest = [], 0
        batch.append(w)
        longest = max(longest, size)
    if batch:
        yield batch
