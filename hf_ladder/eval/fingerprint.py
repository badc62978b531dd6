"""What a rung's eval scores depend on, as one sha256: its model files, dtype, the documents, validation text,
prompts, `eval:` section, seed, judge and hf_ladder's own code. `hf_ladder.eval.suite` keeps the last eval's scores
of a rung whose fingerprint is unchanged (`hf-ladder eval --rescore` scores every rung again)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import cache
from pathlib import Path

import torch

from hf_ladder.modeling import gguf_file
from hf_ladder.schema import EvalConfig, Recipe


def inputs_digest(tasks: list[str], docs: dict[str, list[dict]], validation_text: str,
                  prompt_sets: dict[str, list[str]], recipe: Recipe) -> str:
    """sha256 (hex) of what every rung's scores depend on besides its own weights: the tasks and their documents,
    the validation text, the prompt sets, the `eval:` section (its baselines list aside) and seed, the judge's
    files, and the code (hf_ladder's own source, the torch and transformers versions)."""
    import transformers

    cfg = asdict(recipe.eval or EvalConfig())
    cfg.pop("baselines")
    parts = {"tasks": tasks, "docs": docs, "text": validation_text, "prompts": prompt_sets, "eval": cfg,
             "seed": recipe.seed, "judge": model_files(cfg["judge"]) if cfg["judge"] and prompt_sets else None,
             "code": [source_digest(), torch.__version__, transformers.__version__]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint(source, dtype: str, inputs: str) -> str:
    """sha256 (hex) of a rung's scores' dependencies: its model files (`model_files`), `dtype`, and `inputs`
    (`inputs_digest`). Equal fingerprints: scoring again would give the same numbers."""
    return hashlib.sha256(json.dumps([model_files(source), dtype, inputs]).encode()).hexdigest()


def model_files(source) -> list | str:
    """[path, bytes, modification time in ns] of every file of a local model (a folder, a .gguf file, a packaged
    GGUF's file); a Hub id stands for itself (its revision is the Hub's)."""
    try:
        path = gguf_file(source) or Path(source)
    except OSError:  # a packaged GGUF that is not installed: it will not load either
        return str(source)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files] or str(source)


@cache
def source_digest() -> str:
    """sha256 (hex) of hf_ladder's own Python files: a change to the code that scores is a change of the scores."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        digest.update(str(f.relative_to(root)).encode() + f.read_bytes())
    return digest.hexdigest()


def unchanged(info: dict, scores: dict, mark: str, tasks: list[str], earlier: dict[str, list[dict]],
              name: str) -> bool:
    """Whether the last eval measured this rung with the same fingerprint and kept a result for every task (its
    scores, or why it skipped them; the samples task: its rows in samples.jsonl)."""
    done = set(scores) | set(info.get("skipped", {}))
    return (info.get("fingerprint") == mark and info.get("measured", False) and set(tasks) <= done
            and ("samples" not in tasks or name in earlier))


def group_rows(rows: list[dict]) -> dict[str, list[dict]]:
    """samples.jsonl rows by rung, in file order."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["rung"], []).append(row)
    return out
