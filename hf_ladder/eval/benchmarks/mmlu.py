"""MMLU, 0-shot and 5-shot, as lm-evaluation-harness 0.4.13 scores it: lm_eval/tasks/mmlu/default/
_default_template_yaml, mmlu_<subject>.yaml, _mmlu.yaml. The prompt is the subject's description line, the first k
dev questions with their answers (sampler first_n), then the question; " A".." D" are scored; acc is the
micro-average over all questions (weight_by_size), plus acc/<subject>. acc_stderr is over all questions together
(the harness pools per-subject variances instead, api/metrics.py:625-641: a slightly different number).
Data: cais/mmlu, test split (dev for the shots); or data_dir/mmlu/{dev,test}/<subject>_{dev,test}.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hf_ladder.eval.benchmarks.common import accuracy, per_doc

SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)


def read_csv(path: Path, subject: str) -> list[dict]:
    """Questions of one Hendrycks CSV as cais/mmlu rows {"subject", "question", "choices", "answer": 0-3}.

    Columns: question, A, B, C, D, answer, read as strings with the csv module (no type inference, so "01"
    stays "01"). The answer is a letter A-D (original files) or 0-3 (converted files with a header row
    `question,...,answer`); a header row is skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a row without 6 fields or with another answer, naming the file and row.
    """
    docs = []
    with open(path, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if n == 1 and len(row) == 6 and row[0] == "question" and row[5] == "answer":
                continue
            if len(row) != 6:
                raise ValueError(f"{path}: row {n}: expected 6 fields (question, A, B, C, D, answer), got {len(row)}")
            answer = row[5].strip()
            if answer in ("A", "B", "C", "D"):
                answer = "ABCD".index(answer)
            elif answer in ("0", "1", "2", "3"):
                answer = int(answer)
            else:
                raise ValueError(f"{path}: row {n}: answer {row[5]!r} is not A-D or 0-3")
            docs.append({"subject": subject, "question": row[0], "choices": row[1:5], "answer": answer})
    return docs


def subject_rows(subject: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """cais/mmlu rows of one subject and split ("test" or "dev"), from data_dir or the Hub."""
    if data_dir is None:
        from datasets import load_dataset

        return [{**row, "subject": subject} for row in load_dataset("cais/mmlu", subject, split=split)]
    path = Path(data_dir) / "mmlu" / split / f"{subject}_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"MMLU {split} file for subject {subject!r} not found: {path}")
    return read_csv(path, subject)


def load(data_dir: str | Path | None = None, limit: int | None = None, subjects: list[str] | None = None,
         shots: int = 0) -> list[dict]:
    """The first `limit` test questions of each subject (lm-eval's --limit is per subtask), subject by subject;
    with `shots`, each question carries its subject's first `shots` dev rows under "fewshot".

    Raises:
        ValueError: an unknown subject, a malformed row, or fewer dev rows than shots (the harness asserts).
        FileNotFoundError: a missing local file.
    """
    unknown = set(subjects or ()) - set(SUBJECTS)
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {sorted(unknown)}")
    docs = [doc for s in (subjects or SUBJECTS) for doc in subject_rows(s, "test", data_dir)[:limit]]
    if shots:
        dev = {s: subject_rows(s, "dev", data_dir)[:shots] for s in dict.fromkeys(d["subject"] for d in docs)}
        short = sorted(s for s, rows in dev.items() if len(rows) < shots)
        if short:
            raise ValueError(f"MMLU dev split has fewer than {shots} rows for {short}")
        docs = [{**d, "fewshot": dev[d["subject"]]} for d in docs]
    return docs


def question(doc: dict) -> str:
    """The question block of _default_template_yaml's doc_to_text (question stripped, choices as they are)."""
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def description(subject: str) -> str:
    """The subject's description line (mmlu_<subject>.yaml, made by tasks/mmlu/_generate_configs.py:110)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def context(doc: dict) -> str:
    """Description line, then each shot's question + " " + its answer letter + "\\n\\n", then the question
    (api/task.py:933-1107 fewshot_context / build_qa_turn, target_delimiter " ", fewshot_delimiter "\\n\\n")."""
    examples = "".join(question(s) + " " + "ABCD"[s["answer"]] + "\n\n" for s in doc.get("fewshot", ()))
    return description(doc["subject"]) + examples + question(doc)


def requests(doc: dict) -> list[tuple[str, str]]:
    """The harness's four (context, " " + letter) requests (one forward: the letters are single tokens)."""
    prompt = context(doc)
    return [(prompt, " " + letter) for letter in "ABCD"]


def score(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True,
          max_length: int | None = None) -> dict[str, float]:
    """acc over all questions, its stderr, n, and acc/<subject>."""
    results = per_doc(model, tokenizer, [requests(d) for d in docs], batch_size, progress, max_length)
    hits = [1.0 if np.argmax([ll for ll, _ in res]) == d["answer"] else 0.0 for d, res in zip(docs, results)]
    per_subject: dict[str, list[float]] = {}
    for d, hit in zip(docs, hits):
        per_subject.setdefault(d["subject"], []).append(hit)
    return {**accuracy("acc", hits), "n": len(docs), **{f"acc/{s}": sum(h) / len(h) for s, h in per_subject.items()}}
