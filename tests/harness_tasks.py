"""lm-evaluation-harness task YAMLs over local files: the reference our scorers are checked against
(tests/test_benchmarks.py, tests/test_eval.py) and timed against (bench/eval_speed.py). lm-eval is a dev
dependency; nothing in hf_ladder imports it or this file."""

import json
from pathlib import Path

from hf_ladder.eval.benchmarks import mmlu, wikitext

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
    """Write lm-eval task YAMLs that read the local files of `data_dir`, for `lm_eval
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
    pages = [{"page": p} for p in wikitext.pages((data_dir / "wikitext-2" / "wiki.test.raw").read_text("utf-8"))]
    (out / "wikitext_local.yaml").write_text(_yaml([
        "task: wikitext_local", _dataset({"test": _write_jsonl(out / "wikitext_pages.jsonl", pages)}, cache),
        "output_type: loglikelihood_rolling", "test_split: test", 'doc_to_text: ""',
        "doc_to_target: !function wt_shim.wikitext_detokenizer", "process_results: !function wt_shim.process_results",
        "metric_list: [{metric: word_perplexity}, {metric: byte_perplexity}, {metric: bits_per_byte}]"]))
    question = "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}" \
               "\nAnswer:"  # _default_template_yaml's doc_to_text
    for s in subjects:
        for split in ("test", "dev"):
            _write_jsonl(out / f"mmlu_{s}_{split}.jsonl", mmlu.subject_rows(s, split, data_dir))
    for group, shots in (("mmlu_local", 0), ("mmlu5_local", 5)):
        for s in subjects:
            files = {split: [out / f"mmlu_{s}_{split}.jsonl"] for split in ("test", "dev")}
            (out / f"{group}_{s}.yaml").write_text(_yaml([
                f"task: {group}_{s}", _dataset(files, cache), "test_split: test", "fewshot_split: dev",
                "fewshot_config: {sampler: first_n}", f"num_fewshot: {shots}", "output_type: multiple_choice",
                f"description: {json.dumps(mmlu.description(s))}", f"doc_to_text: {json.dumps(question)}",
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
