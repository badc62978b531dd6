"""HellaSwag as lm-evaluation-harness 0.4.13 scores it: lm_eval/tasks/hellaswag/hellaswag.yaml and utils.py:6-25;
acc / acc_norm (argmax of ll, or of ll / characters of the ending) as lm_eval/api/task.py:1489-1547.
Data: Rowan/hellaswag, validation split; or data_dir/hellaswag/*.jsonl (rowanz rows)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hf_ladder.eval.benchmarks.common import accuracy, jsonl_docs, per_doc

KEYS = ("activity_label", "ctx_a", "ctx_b", "endings", "label")


def check(row: dict) -> None:
    """Raises ValueError for a row without 4 string endings or a label 0-3."""
    if not (isinstance(row["endings"], list) and len(row["endings"]) == 4
            and all(isinstance(e, str) for e in row["endings"])):
        raise ValueError("'endings' must be a list of 4 strings")
    if str(row["label"]).strip() not in ("0", "1", "2", "3"):
        raise ValueError(f"'label' must be 0-3, got {row['label']!r}")


def load(data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The first `limit` documents, from data_dir or the Hub. Raises ValueError naming a malformed row."""
    if data_dir is None:
        from datasets import load_dataset

        return list(load_dataset("Rowan/hellaswag", split="validation"))[:limit]
    return jsonl_docs(Path(data_dir), "hellaswag", KEYS, check)[:limit]


def preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py:6-12 (the brackets are WikiHow artifacts; one pass of "  " -> " ")."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def query(doc: dict) -> tuple[str, list[str], int]:
    """(query, 4 endings, gold index) of a row (utils.py:15-25; str.capitalize lowers the rest)."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return preprocess(doc["activity_label"] + ": " + ctx), [preprocess(e) for e in doc["endings"]], int(doc["label"])


def requests(doc: dict) -> list[tuple[str, str]]:
    """The harness's four (context, " " + ending) requests."""
    q, endings, _ = query(doc)
    return [(q, " " + e) for e in endings]


def score(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True,
          max_length: int | None = None) -> dict[str, float]:
    """acc, acc_norm, their stderrs, n."""
    results = per_doc(model, tokenizer, [requests(d) for d in docs], batch_size, progress, max_length)
    acc, acc_norm = [], []
    for doc, res in zip(docs, results):
        _, endings, gold = query(doc)
        lls = np.array([ll for ll, _ in res])
        chars = np.array([float(len(e)) for e in endings])
        acc.append(1.0 if np.argmax(lls) == gold else 0.0)
        acc_norm.append(1.0 if np.argmax(lls / chars) == gold else 0.0)
    return {**accuracy("acc", acc), **accuracy("acc_norm", acc_norm), "n": len(docs)}
