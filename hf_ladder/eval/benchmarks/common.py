"""What the benchmark files share: reading JSON-lines documents with a clear error per bad row, the harness's
standard errors, and scoring every request of every document in one pass of `loglikelihood`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hf_ladder.eval.loglikelihood import loglikelihood


def read_jsonl(path: Path, keys: tuple[str, ...], check) -> list[dict]:
    """Rows of a JSON-lines file, each with `keys` and passing `check(row)` (which raises ValueError).

    Raises:
        ValueError: naming the file and line of the first bad row.
    """
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e})") from None
            missing = [k for k in keys if not isinstance(row, dict) or k not in row]
            if missing:
                raise ValueError(f"{path}:{n}: missing field(s) {missing}")
            try:
                check(row)
            except ValueError as e:
                raise ValueError(f"{path}:{n}: {e}") from None
            rows.append(row)
    return rows


def jsonl_docs(data_dir: Path, folder: str, keys: tuple[str, ...], check) -> list[dict]:
    """Rows of every data_dir/folder/*.jsonl, files in name order.

    Raises:
        FileNotFoundError: the folder has no *.jsonl file.
    """
    files = sorted((Path(data_dir) / folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no {folder}/*.jsonl under {data_dir}")
    return [row for path in files for row in read_jsonl(path, keys, check)]


def mean_stderr(xs: list[float]) -> float:
    """Sample standard deviation / sqrt(n) (lm_eval/api/metrics.py:337-343); nan for n < 2."""
    n = len(xs)
    if n < 2:
        return math.nan
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def bootstrap_perplexity_stderr(lls: list[float], iters: int = 1000, seed: int = 1234) -> float:
    """Sample std of exp(-mean ll) over `iters` resamples with replacement (the estimator of
    lm_eval/api/metrics.py:550-583 bootstrap_stderr, with numpy's generator instead of the harness's)."""
    x = np.asarray(lls, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ppl = [math.exp(-x[rng.integers(0, len(x), len(x))].mean()) for _ in range(iters)]
    return float(np.std(ppl, ddof=1))


def accuracy(name: str, hits: list[float]) -> dict[str, float]:
    """{name: mean of the 0/1 hits, name_stderr: its standard error}."""
    return {name: sum(hits) / len(hits), f"{name}_stderr": mean_stderr(hits)}


def per_doc(model, tokenizer, reqs: list[list[tuple[str, str]]], batch_size: int,
            progress: bool, max_length: int | None = None) -> list[list[tuple[float, bool]]]:
    """(ll, is_greedy) of every (context, continuation) request, grouped back per document."""
    flat = iter(loglikelihood(model, tokenizer, [r for rs in reqs for r in rs], batch_size, progress, max_length))
    return [[next(flat) for _ in rs] for rs in reqs]
