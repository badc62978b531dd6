"""The benchmarks, each scored exactly as lm-evaluation-harness 0.4.13 scores it: one file per benchmark
(`load` its documents, `requests` of a document, `score` a model), registered here by its task name
(`hf_ladder.metrics.TASKS`). A new benchmark is one file and one line in BENCHMARKS."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from hf_ladder.eval.benchmarks import hellaswag, lambada, mmlu, wikitext


@dataclass(frozen=True)
class Benchmark:
    load: Callable  # (data_dir | None, limit | None) -> documents, read once for every rung
    requests: Callable  # (document) -> the harness's requests for it
    score: Callable  # (model, tokenizer, documents, batch_size, progress, max_length) -> {metric: value}


BENCHMARKS = {
    "wikitext": Benchmark(wikitext.load, wikitext.requests, wikitext.score),
    "hellaswag": Benchmark(hellaswag.load, hellaswag.requests, hellaswag.score),
    "lambada_openai": Benchmark(lambada.load, lambada.requests, lambada.score),
    "mmlu": Benchmark(partial(mmlu.load, shots=0), mmlu.requests, mmlu.score),
    "mmlu_5shot": Benchmark(partial(mmlu.load, shots=5), mmlu.requests, mmlu.score),
}


def load(task: str, data_dir: str | Path | None = None, limit: int | None = None,
         subjects: list[str] | None = None) -> list[dict]:
    """The task's first `limit` documents (MMLU: per subject, of `subjects` or all 57), from `data_dir` (a folder
    laid out like the repository's shared test data) or from the Hub.

    Raises:
        KeyError: not a benchmark. ValueError: malformed rows (naming file and row). FileNotFoundError: a
        missing local file.
    """
    if task.startswith("mmlu"):
        return BENCHMARKS[task].load(data_dir, limit, subjects)
    return BENCHMARKS[task].load(data_dir, limit)


def score(model, tokenizer, task: str, docs: list[dict], batch_size: int = 32, progress: bool = True,
          max_length: int | None = None) -> dict:
    """{metric: value} of one task on documents from `load`; the model runs as it is (device, dtype),
    log-probabilities in fp32; `max_length`: lm-eval's model argument (`hf_ladder.modeling.context_length`)."""
    return BENCHMARKS[task].score(model, tokenizer, docs, batch_size, progress, max_length)


def evaluate(model, tokenizer, tasks=tuple(BENCHMARKS), data_dir: str | Path | None = None, limit: int | None = None,
             subjects: list[str] | None = None, batch_size: int = 32, progress: bool = True) -> dict[str, dict]:
    """{task: {metric: value}}: `load` then `score` for each task."""
    return {task: score(model, tokenizer, task, load(task, data_dir, limit, subjects), batch_size, progress)
            for task in tqdm(list(tasks), desc="benchmarks", unit="task", disable=not progress)}
