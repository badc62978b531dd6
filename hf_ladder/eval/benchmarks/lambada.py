"""LAMBADA (OpenAI) as lm-evaluation-harness 0.4.13 scores it: lm_eval/tasks/lambada/lambada_openai.yaml; context =
all but the last space-separated word; acc = mean is_greedy, perplexity = exp(-mean ll) (api/metrics.py:45-48),
its stderr bootstrapped. Data: EleutherAI/lambada_openai, test split; or data_dir/lambada/*.jsonl ({"text"} rows)."""

from __future__ import annotations

import math
from pathlib import Path

from hf_ladder.eval.benchmarks.common import accuracy, bootstrap_perplexity_stderr, jsonl_docs, per_doc


def check(row: dict) -> None:
    """Raises ValueError for a row without a non-empty text."""
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise ValueError("'text' must be a non-empty string")


def load(data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The first `limit` passages, from data_dir or the Hub. Raises ValueError naming a malformed row."""
    if data_dir is None:
        from datasets import load_dataset

        return list(load_dataset("EleutherAI/lambada_openai", "default", split="test"))[:limit]
    return jsonl_docs(Path(data_dir), "lambada", ("text",), check)[:limit]


def split(text: str) -> tuple[str, str]:
    """(context, " " + last word) of a passage, splitting on single spaces (lambada_openai.yaml)."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def requests(doc: dict) -> list[tuple[str, str]]:
    """The harness's one (context, " " + last word) request."""
    return [split(doc["text"])]


def score(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True,
          max_length: int | None = None) -> dict[str, float]:
    """acc (the target word is greedy), its stderr, perplexity with its bootstrapped stderr, n. (The harness
    bootstraps with its own generator and 100000 resamples, so the perplexity stderrs agree only roughly.)"""
    reqs = [requests(d) for d in docs]
    results = [res[0] for res in per_doc(model, tokenizer, reqs, batch_size, progress, max_length)]
    lls = [ll for ll, _ in results]
    return {**accuracy("acc", [1.0 if greedy else 0.0 for _, greedy in results]),
            "perplexity": math.exp(-sum(lls) / len(lls)), "perplexity_stderr": bootstrap_perplexity_stderr(lls),
            "n": len(docs)}
