"""Benchmarks scored exactly as lm-evaluation-harness 0.4.13 scores them: HellaSwag, LAMBADA (OpenAI), MMLU
(0-shot and 5-shot) and WikiText-2, on top of `hf_ladder.eval.loglikelihood`.

Task definitions (lm-eval 0.4.13 as installed from PyPI, file:line; summarised in /work/shared/reference/
eval-harness-spec.md §1.1-1.5):
- hellaswag: lm_eval/tasks/hellaswag/hellaswag.yaml, utils.py:6-25; acc / acc_norm (argmax of ll / characters of
  the ending) as lm_eval/api/task.py:1489-1547. Rowan/hellaswag, validation split.
- lambada_openai: lm_eval/tasks/lambada/lambada_openai.yaml; context = all but the last space-separated word;
  acc = mean is_greedy, perplexity = exp(-mean ll) (api/metrics.py:45-48). EleutherAI/lambada_openai, test.
- mmlu, mmlu_5shot: lm_eval/tasks/mmlu/default/_default_template_yaml, mmlu_<subject>.yaml, _mmlu.yaml;
  description line + first k dev questions (sampler first_n) + the question; " A".." D" scored; acc is the
  micro-average over all questions (weight_by_size), plus acc/<subject>. cais/mmlu, test (dev for shots).
- wikitext: lm_eval/tasks/wikitext/wikitext.yaml, preprocess_wikitext.py; each article scored whole with
  rolling windows after `wikitext_detokenizer`; word and byte counts from the original page;
  word_perplexity = exp(-sum ll / sum words), byte_perplexity = exp(-sum ll / sum bytes),
  bits_per_byte = -sum ll / sum bytes / ln 2 (api/metrics.py:51-58, 468-470). Our add-on:
  token_perplexity = exp(-sum ll / sum tokens). EleutherAI/wikitext_document_level, wikitext-2-raw-v1, test.

Standard errors: `<metric>_stderr` = sample std / sqrt(n) for accuracies (api/metrics.py:337-343);
lambada perplexity_stderr is bootstrapped (1000 resamples, fixed seed; the harness also bootstraps it, with its
own generator and 100000 resamples by default, so the two agree only roughly). The wikitext perplexities have
no stderr (the harness reports none). For MMLU, acc_stderr is over all questions together; the harness pools
per-subject variances instead (api/metrics.py:625-641 pooled_sample_stderr), a slightly different number.

Data: by Hub id with `datasets.load_dataset` (data_dir=None), or from a local folder laid out like
/work/shared/data: hellaswag/*.jsonl (rowanz rows), lambada/*.jsonl ({"text"} rows), mmlu/{dev,test}/
<subject>_{dev,test}.csv (Hendrycks CSVs: question, A, B, C, D, answer; a header row and 0-3 answers, as in
/work/shared/data, are accepted too), wikitext-2/wiki.test.raw (split into articles as the
EleutherAI/wikitext_document_level loading script does, see `wikitext_pages`).
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from hf_ladder.eval.loglikelihood import loglikelihood, loglikelihood_rolling, strided_nll

TASKS = ("hellaswag", "lambada_openai", "mmlu", "mmlu_5shot", "wikitext")

MMLU_SUBJECTS = (
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

# ---------------------------------------------------------------------------------------------------------------
# loading


def _read_jsonl(path: Path, keys: tuple[str, ...], check) -> list[dict]:
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


def _jsonl_docs(data_dir: Path, folder: str, keys: tuple[str, ...], check) -> list[dict]:
    """Rows of every data_dir/folder/*.jsonl, files in name order."""
    files = sorted((data_dir / folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no {folder}/*.jsonl under {data_dir}")
    return [row for path in files for row in _read_jsonl(path, keys, check)]


def _check_hellaswag(row: dict) -> None:
    if not (isinstance(row["endings"], list) and len(row["endings"]) == 4
            and all(isinstance(e, str) for e in row["endings"])):
        raise ValueError("'endings' must be a list of 4 strings")
    if str(row["label"]).strip() not in ("0", "1", "2", "3"):
        raise ValueError(f"'label' must be 0-3, got {row['label']!r}")


def _check_lambada(row: dict) -> None:
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise ValueError("'text' must be a non-empty string")


def read_mmlu_csv(path: Path, subject: str) -> list[dict]:
    """MMLU questions of one Hendrycks CSV as cais/mmlu rows {"subject", "question", "choices", "answer": 0-3}.

    Columns: question, A, B, C, D, answer, read as strings with the csv module (no type inference, so "01"
    stays "01"). The answer is a letter A-D (original files) or 0-3 (converted files with a header row
    `question,...,answer`, as /work/shared/data has); a header row is skipped.

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


def wikitext_pages(raw: str) -> list[str]:
    """Articles of a WikiText raw file, split as the EleutherAI/wikitext_document_level loading script
    (wikitext_document_level.py `_generate_examples`, read from a stored copy of that Hub script).

    Lines are split on "\\n"; a line starts a new article when, after "= = =" -> "===" and "= =" -> "==" and
    strip(), it starts with "= " and ends with " =" (a level-1 heading " = Title = "). An article is its
    lines joined with "\\n", so it begins with its heading and ends with the blank line(s) before the next
    heading; text before the first heading is dropped when blank; the last article keeps the file's final
    empty line (ends with "\\n"). wikitext-2-raw-v1 test gives 62 articles.
    """
    pages, lines = [], []
    for line in raw.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    pages.append("\n".join(lines))
    return pages


def _local_docs(task: str, data_dir: Path) -> list[dict]:
    if task == "hellaswag":
        keys = ("activity_label", "ctx_a", "ctx_b", "endings", "label")
        return _jsonl_docs(data_dir, "hellaswag", keys, _check_hellaswag)
    if task == "lambada_openai":
        return _jsonl_docs(data_dir, "lambada", ("text",), _check_lambada)
    path = data_dir / "wikitext-2" / "wiki.test.raw"  # wikitext
    return [{"page": page} for page in wikitext_pages(path.read_text(encoding="utf-8"))]


def _hub_docs(task: str) -> list[dict]:
    from datasets import load_dataset

    if task == "hellaswag":
        return list(load_dataset("Rowan/hellaswag", split="validation"))
    if task == "lambada_openai":
        return list(load_dataset("EleutherAI/lambada_openai", "default", split="test"))
    return list(load_dataset("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", split="test"))


def load_mmlu(subject: str, split: str, data_dir: str | Path | None = None) -> list[dict]:
    """cais/mmlu rows {"subject", "question", "choices": [4 str], "answer": 0-3} of one subject and split
    ("test" or "dev"), from `data_dir`/mmlu/<split>/<subject>_<split>.csv or from the Hub."""
    if data_dir is None:
        from datasets import load_dataset

        return [{**row, "subject": subject} for row in load_dataset("cais/mmlu", subject, split=split)]
    path = Path(data_dir) / "mmlu" / split / f"{subject}_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"MMLU {split} file for subject {subject!r} not found: {path}")
    return read_mmlu_csv(path, subject)


def mmlu_shots(subjects, data_dir: str | Path | None = None, k: int = 5) -> dict[str, list[dict]]:
    """{subject: its first k dev rows}, the few-shot examples (sampler first_n).

    Raises:
        ValueError: a subject with fewer than k dev rows (the harness asserts on it).
    """
    shots = {s: load_mmlu(s, "dev", data_dir)[:k] for s in subjects}
    short = sorted(s for s, rows in shots.items() if len(rows) < k)
    if short:
        raise ValueError(f"MMLU dev split has fewer than {k} rows for {short}")
    return shots


def load_docs(task: str, data_dir: str | Path | None = None, limit: int | None = None,
              subjects: list[str] | None = None) -> list[dict]:
    """The task's documents, in dataset order, the first `limit` of them (for MMLU: per subject, as lm-eval's
    --limit is per subtask).

    Rows: hellaswag {"activity_label", "ctx_a", "ctx_b", "endings", "label"}; lambada_openai {"text"};
    mmlu / mmlu_5shot {"subject", "question", "choices", "answer"} (test split, `subjects` or all 57);
    wikitext {"page"} (one article).

    Raises:
        ValueError: unknown task or subject, malformed rows (naming file and row).
        FileNotFoundError: a missing local file.
    """
    if task in ("mmlu", "mmlu_5shot"):
        unknown = set(subjects or ()) - set(MMLU_SUBJECTS)
        if unknown:
            raise ValueError(f"unknown MMLU subject(s) {sorted(unknown)}")
        return [doc for s in (subjects or MMLU_SUBJECTS) for doc in load_mmlu(s, "test", data_dir)[:limit]]
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {TASKS}")
    docs = _hub_docs(task) if data_dir is None else _local_docs(task, Path(data_dir))
    return docs[:limit]


# ---------------------------------------------------------------------------------------------------------------
# prompts: the harness's task definitions


def hellaswag_preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py:6-12 (the brackets are WikiHow artifacts; one pass of "  " -> " ")."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_query(doc: dict) -> tuple[str, list[str], int]:
    """(query, 4 endings, gold index) of a HellaSwag row (utils.py:15-25; str.capitalize lowers the rest)."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return (hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
            [hellaswag_preprocess(e) for e in doc["endings"]], int(doc["label"]))


def lambada_split(text: str) -> tuple[str, str]:
    """(context, " " + last word) of a LAMBADA passage, splitting on single spaces (lambada_openai.yaml)."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def mmlu_question(doc: dict) -> str:
    """The question block of _default_template_yaml's doc_to_text (question stripped, choices as they are)."""
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def mmlu_description(subject: str) -> str:
    """The subject's description line (mmlu_<subject>.yaml, made by tasks/mmlu/_generate_configs.py:110)."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mmlu_context(doc: dict, shots: list[dict]) -> str:
    """Description line, then each shot's question + " " + its answer letter + "\\n\\n", then the question
    (api/task.py:933-1107 fewshot_context / build_qa_turn, target_delimiter " ", fewshot_delimiter "\\n\\n";
    the shots are the subject's first k dev rows, api/samplers.py:104-114 first_n)."""
    examples = "".join(mmlu_question(s) + " " + "ABCD"[s["answer"]] + "\n\n" for s in shots)
    return mmlu_description(doc["subject"]) + examples + mmlu_question(doc)


def wikitext_detokenizer(page: str) -> str:
    """The scored text of a WikiText article: a port of lm_eval/tasks/wikitext/preprocess_wikitext.py:4-36
    (`wikitext_detokenizer`), same replacements in the same order."""
    string = page
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


# ---------------------------------------------------------------------------------------------------------------
# metrics


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


def _acc(name: str, hits: list[float]) -> dict[str, float]:
    return {name: sum(hits) / len(hits), f"{name}_stderr": mean_stderr(hits)}


# ---------------------------------------------------------------------------------------------------------------
# tasks


def doc_requests(task: str, doc: dict, shots: list[dict] = ()) -> list[tuple[str, ...]]:
    """The harness's requests for one document (its Instance.arguments, in order): (context, continuation)
    pairs for the log-likelihood tasks (target_delimiter " " before each choice), (text,) for wikitext.
    `shots`: MMLU few-shot rows."""
    if task == "hellaswag":
        query, endings, _ = hellaswag_query(doc)
        return [(query, " " + e) for e in endings]
    if task == "lambada_openai":
        return [lambada_split(doc["text"])]
    if task in ("mmlu", "mmlu_5shot"):
        context = mmlu_context(doc, shots)
        return [(context, " " + letter) for letter in "ABCD"]
    if task == "wikitext":
        return [(wikitext_detokenizer(doc["page"]),)]
    raise ValueError(f"unknown task {task!r}; known: {TASKS}")


def _per_doc(model, tokenizer, reqs: list[list[tuple[str, str]]], batch_size: int,
             progress: bool) -> list[list[tuple[float, bool]]]:
    """(ll, is_greedy) of every request, grouped back per document."""
    flat = iter(loglikelihood(model, tokenizer, [r for rs in reqs for r in rs], batch_size, progress))
    return [[next(flat) for _ in rs] for rs in reqs]


def score_hellaswag(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True) -> dict:
    """acc, acc_norm (argmax of ll / characters of the ending), their stderrs, n (api/task.py:1489-1547)."""
    results = _per_doc(model, tokenizer, [doc_requests("hellaswag", d) for d in docs], batch_size, progress)
    acc, acc_norm = [], []
    for doc, res in zip(docs, results):
        _, endings, gold = hellaswag_query(doc)
        lls = np.array([ll for ll, _ in res])
        chars = np.array([float(len(e)) for e in endings])
        acc.append(1.0 if np.argmax(lls) == gold else 0.0)
        acc_norm.append(1.0 if np.argmax(lls / chars) == gold else 0.0)
    return {**_acc("acc", acc), **_acc("acc_norm", acc_norm), "n": len(docs)}


def score_lambada(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True) -> dict:
    """acc (target word greedy), its stderr, perplexity = exp(-mean ll) with bootstrapped stderr, n."""
    results = [res[0] for res in _per_doc(model, tokenizer, [doc_requests("lambada_openai", d) for d in docs],
                                          batch_size, progress)]
    lls = [ll for ll, _ in results]
    return {**_acc("acc", [1.0 if greedy else 0.0 for _, greedy in results]),
            "perplexity": math.exp(-sum(lls) / len(lls)), "perplexity_stderr": bootstrap_perplexity_stderr(lls),
            "n": len(docs)}


def score_mmlu(model, tokenizer, docs: list[dict], shots: dict[str, list[dict]] | None = None, batch_size: int = 32,
               progress: bool = True) -> dict:
    """acc over all questions (micro-average), its stderr, n, and acc/<subject>.

    `shots` maps a subject to its few-shot dev rows (in order); None or a missing subject means 0-shot.
    """
    shots = shots or {}
    reqs = [doc_requests("mmlu", d, shots.get(d["subject"], [])) for d in docs]
    results = _per_doc(model, tokenizer, reqs, batch_size, progress)
    hits = [1.0 if np.argmax([ll for ll, _ in res]) == d["answer"] else 0.0 for d, res in zip(docs, results)]
    per_subject: dict[str, list[float]] = {}
    for d, hit in zip(docs, hits):
        per_subject.setdefault(d["subject"], []).append(hit)
    return {**_acc("acc", hits), "n": len(docs), **{f"acc/{s}": sum(h) / len(h) for s, h in per_subject.items()}}


def score_wikitext(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True) -> dict:
    """word_perplexity, byte_perplexity, bits_per_byte (counts from the original page), token_perplexity, n."""
    texts = [doc_requests("wikitext", d)[0][0] for d in docs]
    results = loglikelihood_rolling(model, tokenizer, texts, batch_size, progress)
    ll = sum(r[0] for r in results)
    words = sum(len(re.split(r"\s+", d["page"])) for d in docs)
    n_bytes = sum(len(d["page"].encode("utf-8")) for d in docs)
    tokens = sum(r[1] for r in results)
    return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / n_bytes),
            "bits_per_byte": -ll / n_bytes / math.log(2), "token_perplexity": math.exp(-ll / tokens),
            "n": len(docs)}


def wikitext_corpus(data_dir: str | Path | None = None) -> str:
    """WikiText-2 raw test as the HF perplexity doc reads it: "\\n\\n".join(rows) of the line-level
    wikitext-2-raw-v1 test split, whose rows are each non-blank line with its "\\n", and "" for blank lines
    (the datasets wikitext script). Locally rebuilt from wikitext-2/wiki.test.raw."""
    if data_dir is None:
        from datasets import load_dataset

        return "\n\n".join(load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")["text"])
    raw = (Path(data_dir) / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    return "\n\n".join(line + "\n" if line.strip() else "" for line in raw.split("\n")[:-1])


def wikitext_strided(model, tokenizer, stride: int, data_dir: str | Path | None = None, batch_size: int = 8,
                     progress: bool = True) -> dict:
    """HF-docs strided perplexity of WikiText-2 raw test (not a harness number): {"perplexity", "tokens"}."""
    nll, tokens = strided_nll(model, tokenizer, wikitext_corpus(data_dir), stride, batch_size, progress)
    return {"perplexity": math.exp(nll / tokens), "tokens": tokens}


def evaluate(model, tokenizer, tasks=TASKS, data_dir: str | Path | None = None, limit: int | None = None,
             subjects: list[str] | None = None, batch_size: int = 32, progress: bool = True) -> dict[str, dict]:
    """Score `model` on `tasks`: {task: {metric: value}}, metric keys flat (see the score_* functions).

    `limit`: first N documents per task (MMLU: per subject); `subjects`: MMLU subjects (default all 57);
    `data_dir`: local folder like /work/shared/data, or None for the Hub. The model runs as it is (device,
    dtype); log-probabilities are fp32.
    """
    return {task: score(model, tokenizer, task, *load_task(task, data_dir, limit, subjects), batch_size, progress)
            for task in tqdm(list(tasks), desc="benchmarks", unit="task", disable=not progress)}


def load_task(task: str, data_dir: str | Path | None = None, limit: int | None = None,
              subjects: list[str] | None = None) -> tuple[list[dict], dict[str, list[dict]] | None]:
    """(documents, MMLU few-shot rows per subject or None): what `score` needs, read once for any number of
    models. Raises as `load_docs` and `mmlu_shots`."""
    docs = load_docs(task, data_dir, limit, subjects)
    return docs, mmlu_shots({d["subject"] for d in docs}, data_dir) if task == "mmlu_5shot" else None


def score(model, tokenizer, task: str, docs: list[dict], shots: dict[str, list[dict]] | None = None,
          batch_size: int = 32, progress: bool = True) -> dict[str, float]:
    """{metric: value} of one task on documents from `load_task` (the score_* function of the task)."""
    if task == "hellaswag":
        return score_hellaswag(model, tokenizer, docs, batch_size, progress)
    if task == "lambada_openai":
        return score_lambada(model, tokenizer, docs, batch_size, progress)
    if task in ("mmlu", "mmlu_5shot"):
        return score_mmlu(model, tokenizer, docs, shots, batch_size, progress)
    return score_wikitext(model, tokenizer, docs, batch_size, progress)


# ---------------------------------------------------------------------------------------------------------------
# cross-checking with lm-eval (a dev dependency; nothing here imports it)

_HARNESS_SHIMS = {
    "hs_shim.py": "from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n",
    "wt_shim.py": "from lm_eval.tasks.wikitext.preprocess_wikitext import (  # noqa: F401\n"
                  "    process_results, wikitext_detokenizer)\n",
}


def _yaml(lines: list[str]) -> str:
    return "\n".join(lines) + "\nmetadata: {version: 1.0}\n"


def _dataset(files: dict[str, list[Path]], cache: Path) -> str:
    """The YAML lines loading local JSON-lines files as named splits (JSON is YAML; absolute paths)."""
    kwargs = {"data_files": {split: [str(p.resolve()) for p in paths] for split, paths in files.items()},
              "cache_dir": str(cache.resolve())}
    return f"dataset_path: json\ndataset_name: null\ndataset_kwargs: {json.dumps(kwargs)}"


def _write_jsonl(path: Path, rows: list[dict]) -> list[Path]:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return [path]


def write_harness_tasks(out_dir: str | Path, data_dir: str | Path, subjects: list[str]) -> dict[str, str]:
    """Write lm-eval task YAMLs that read the local files of `data_dir` (spec §3), for `lm_eval
    --include_path out_dir`; the stock HellaSwag and WikiText preprocessing is imported by 1-line shims.

    Returns {our task: lm-eval task or group name}. MMLU groups aggregate acc weighted by size (as _mmlu.yaml);
    mmlu_5shot subtasks set num_fewshot: 5 with first_n dev shots. MMLU and WikiText are rewritten as JSONL in
    cais/mmlu and wikitext_document_level rows (from our loaders), HellaSwag and LAMBADA are read as they are.
    `datasets` caches its converted copies under out_dir, not in ~/.cache.
    """
    out, data_dir = Path(out_dir), Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "hf_datasets_cache"
    for name, text in _HARNESS_SHIMS.items():
        (out / name).write_text(text)
    hellaswag = {"validation": sorted((data_dir / "hellaswag").glob("*.jsonl"))}
    (out / "hellaswag_local.yaml").write_text(_yaml([
        "task: hellaswag_local", _dataset(hellaswag, cache), "output_type: multiple_choice",
        "training_split: null", "validation_split: validation", "test_split: null",
        "process_docs: !function hs_shim.process_docs", 'doc_to_text: "{{query}}"', 'doc_to_target: "{{label}}"',
        'doc_to_choice: "choices"', "metric_list: [{metric: acc, aggregation: mean, higher_is_better: true},",
        "  {metric: acc_norm, aggregation: mean, higher_is_better: true}]"]))
    lambada = {"test": sorted((data_dir / "lambada").glob("*.jsonl"))}
    (out / "lambada_openai_local.yaml").write_text(_yaml([
        "task: lambada_openai_local", _dataset(lambada, cache), "output_type: loglikelihood", "test_split: test",
        "doc_to_text: \"{{text.split(' ')[:-1]|join(' ')}}\"", "doc_to_target: \"{{' '+text.split(' ')[-1]}}\"",
        "metric_list: [{metric: perplexity, aggregation: perplexity, higher_is_better: false},",
        "  {metric: acc, aggregation: mean, higher_is_better: true}]"]))
    pages = [{"page": p} for p in wikitext_pages((data_dir / "wikitext-2" / "wiki.test.raw").read_text("utf-8"))]
    (out / "wikitext_local.yaml").write_text(_yaml([
        "task: wikitext_local", _dataset({"test": _write_jsonl(out / "wikitext_pages.jsonl", pages)}, cache),
        "output_type: loglikelihood_rolling", "test_split: test", 'doc_to_text: ""',
        "doc_to_target: !function wt_shim.wikitext_detokenizer", "process_results: !function wt_shim.process_results",
        "metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]"]))
    question = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}" \
               "\nAnswer:"  # _default_template_yaml's doc_to_text
    for s in subjects:
        for split in ("test", "dev"):
            _write_jsonl(out / f"mmlu_{s}_{split}.jsonl", load_mmlu(s, split, data_dir))
    for group, shots in (("mmlu_local", 0), ("mmlu5_local", 5)):
        for s in subjects:
            files = {split: [out / f"mmlu_{s}_{split}.jsonl"] for split in ("test", "dev")}
            (out / f"{group}_{s}.yaml").write_text(_yaml([
                f"task: {group}_{s}", _dataset(files, cache), "test_split: test", "fewshot_split: dev",
                "fewshot_config: {sampler: first_n}", f"num_fewshot: {shots}", "output_type: multiple_choice",
                f"description: {json.dumps(mmlu_description(s))}", f"doc_to_text: {json.dumps(question)}",
                'doc_to_choice: ["A", "B", "C", "D"]', "doc_to_target: answer",
                "metric_list: [{metric: acc, aggregation: mean, higher_is_better: true}]"]))
        (out / f"{group}.yaml").write_text(_yaml([
            f"group: {group}", f"task: [{', '.join(f'{group}_{s}' for s in subjects)}]",
            "aggregate_metric_list: [{metric: acc, weight_by_size: true}]"]))
    return {"hellaswag": "hellaswag_local", "lambada_openai": "lambada_openai_local", "mmlu": "mmlu_local",
            "mmlu_5shot": "mmlu5_local", "wikitext": "wikitext_local"}


def harness_metrics(results: dict, name: str) -> dict[str, float]:
    """The flat metric dict of lm-eval results["results"][name] ("acc,none" -> "acc", "alias" dropped)."""
    return {k.split(",")[0]: v for k, v in results["results"][name].items() if "," in k}
