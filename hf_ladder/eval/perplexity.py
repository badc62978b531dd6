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
import torch.nn.functional as F
from tqdm.auto import tqdm

from hf_ladder.eval.loglikelihood import rolling_windows
from hf_ladder.modeling import inference


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


def score_text(model, tokenizer, text: str, block_size: int, batch_size: int = 32) -> TextScore:
    """Sum the model's negative log-likelihood over every token of `text` (see module docstring).

    Shapes: each batch is (batch, <= block_size) token ids; logits (batch, T, vocab) in fp32.

    Raises:
        ValueError: `text` is empty.
    """
    if not text:
        raise ValueError("score_text: the text is empty")
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    windows = rolling_windows(ids, prefix, block_size)  # (context, continuation): <= block_size + 1 ids together
    device = next(model.parameters()).device
    nats, count = 0.0, 0
    with inference(model):
        for i in tqdm(range(0, len(windows), batch_size), desc="scoring text", unit="batch", leave=False):
            batch = windows[i: i + batch_size]
            width = max(len(c) + len(k) for c, k in batch) - 1
            inputs = torch.zeros(len(batch), width, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (context, continuation) in enumerate(batch):
                w = context + continuation
                inputs[row, : len(w) - 1] = torch.tensor(w[:-1])
                labels[row, len(context) - 1: len(w) - 1] = torch.tensor(continuation)  # position t predicts t + 1
            logits = model(input_ids=inputs.to(device)).logits.float()  # (B, T, V)
            nats += F.cross_entropy(logits.flatten(0, 1), labels.flatten().to(device), ignore_index=-100,
                                    reduction="sum").item()
            count += int((labels != -100).sum())
    assert count == len(ids), (count, len(ids))
    return TextScore(nats=nats, tokens=count, chars=len(text), bytes=len(text.encode("utf-8")))
