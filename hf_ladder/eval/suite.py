"""`hf-ladder eval`: every finished rung of a run and the baselines, on the same texts, benchmarks and prompts.

Rungs are the run manifest's finished stages, each as its stage declares them (`hf_ladder.stages`: pretrain,
sft, dpo, lora, and a rung per quantized variant, `quantize/<name>`), and the baselines, models the ladder did not
train (`eval.baselines`: GPT-2 small through the Hub and SmolLM2-135M-Instruct from its PyPI package's GGUF by
default; any Hub id, folder or .gguf file). Each is scored on the tasks of `hf_ladder.metrics.TASKS`:

- `heldout`: the recipe corpus's validation text, every token once (lm-eval's rolling windows at the model's
  context length): token perplexity, bits per byte (the headline: it does not depend on the tokenizer) and word
  perplexity (nats over whitespace-separated words, as lm-eval's `word_perplexity`);
- `wikitext`, `hellaswag`, `lambada_openai`, `mmlu`, `mmlu_5shot`: `hf_ladder.eval.benchmarks`, scored as
  lm-evaluation-harness 0.4.13 scores them;
- `samples`: the prompt sets (built-in: the repository's eval/prompts/*.yaml), continued by every rung with the
  same decoding and seed, each sample read by `hf_ladder.monitor.reading` (coherence, rep_4, distinct_2, judge_ppl
  under `eval.judge`, loss_tier). A reference rung, the validation text's own lines after the same prompts,
  anchors the judge's scale.

`--backend lm-eval --tasks arc_easy,...` hands any other harness task to `lm_eval.simple_evaluate` over the
in-memory model (lm-eval's `HFLM`).

Writes `runs/<recipe>/eval/`: `results.json` (`{rung: {task: {metric: value}}}`, merged with earlier results so
a pass-through run adds columns), `rungs.json` (per rung: kind, folder, parameters, tokens seen, measured or
why not, the `fingerprint` of what its scores depend on), `samples.jsonl`; then the report
(`hf_ladder.eval.report`) in `runs/<recipe>/report/`. A rung whose fingerprint is unchanged since the last eval keeps
that eval's scores and samples instead of being scored again (`rescore=True`, `hf-ladder eval --rescore`, scores
everything): after `--force lora` only the rungs from LoRA up are scored, not SmolLM2 again (~13 min in float32 on a
2-core AVX2 CPU).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from hf_ladder import metrics
from hf_ladder.assets import prompts_dir
from hf_ladder.data.corpus import load_corpus
from hf_ladder.eval import benchmarks
from hf_ladder.eval.fingerprint import fingerprint, group_rows, inputs_digest, unchanged
from hf_ladder.eval.perplexity import score_text
from hf_ladder.generate import generate_batch, generation_config
from hf_ladder.modeling import context_length, device, gguf_file, load_model, load_tokenizer, native_bf16
from hf_ladder.monitor.judge import load_judge
from hf_ladder.monitor.reading import read_samples
from hf_ladder.runs import Run, read_json, read_jsonl, write_json, write_jsonl
from hf_ladder.schema import EvalConfig, Recipe, RecipeError
from hf_ladder.stages import LADDER

REFERENCE = "validation text"  # the reference rung: the validation split's own lines after the same prompts


def evaluate_run(recipe: Recipe, tasks: list[str] | None = None, backend: str = "hf-ladder",
                 include_path: str | None = None, rescore: bool = False) -> Path:
    """Evaluate every rung of `recipe`'s run and its baseline (see the module docstring); returns the eval folder.

    `tasks` defaults to `recipe.eval.tasks`; with `backend="lm-eval"` they are lm-evaluation-harness task names,
    and `include_path` is a folder of extra task YAMLs (lm-eval's `--include_path`). A rung whose `fingerprint`
    equals the last eval's keeps that eval's scores, unless `rescore`.

    Raises:
        RecipeError: the run has no finished stage, or a task name is unknown to our scorers.
    """
    cfg, run = recipe.eval or EvalConfig(), Run(recipe)
    tasks = list(tasks or cfg.tasks or metrics.TASK_NAMES)
    if backend == "hf-ladder":
        unknown = [t for t in tasks if t not in metrics.TASK_NAMES]
        if unknown:
            raise RecipeError(f"eval: unknown task(s) {unknown}; ours are {', '.join(metrics.TASK_NAMES)} "
                              "(other lm-evaluation-harness tasks: --backend lm-eval)")
    rungs = find_rungs(run)
    if not rungs:
        raise RecipeError(f"{run.root}: no finished stage to evaluate; run `hf-ladder ladder {recipe.source}` first")
    out = run.root / "eval"
    results, info = read_json(out / "results.json", {}), read_json(out / "rungs.json", {})
    # the validation text: scored whole (heldout) and the reference rung's lines (samples); read once
    validation_text = load_corpus(recipe.data).validation_text if {"heldout", "samples"} & set(tasks) else ""
    data_dir = benchmark_data(cfg.data_dir)
    docs = {}  # each benchmark's documents, read once for every rung
    if backend == "hf-ladder":
        docs, tasks = load_tasks(tasks, data_dir, cfg.limit)
    prompt_sets = load_prompts(cfg.prompts) if "samples" in tasks else {}
    judge = load_judge(cfg.judge) if prompt_sets else None
    samples: list[dict] = []
    if prompt_sets:  # the validation text's own lines after the same prompts: the judge's scale
        rows = reference_rows(prompt_sets, validation_text, judge)
        samples += [{"rung": REFERENCE, **row} for row in rows]
        if rows:
            results[REFERENCE] = {"samples": sample_means(rows)}
            info[REFERENCE] = {"kind": "reference", "model_dir": None, "parameters": None, "tokens_seen": None,
                               "measured": True, "note": "real lines of the validation text after the same prompts"}
    targets = [(name, folder, "variant" if "/" in name else "stage") for name, folder in rungs.items()]
    targets += [(baseline_name(b), b, "baseline") for b in cfg.baselines]
    print(f"eval: {len(targets)} rung(s) · tasks {', '.join(tasks)} · limit {cfg.limit or 'none'} · "
          f"data {data_dir or 'Hub datasets'}")
    inputs = inputs_digest(tasks, docs, validation_text, prompt_sets, recipe)
    earlier = {} if rescore or not (out / "samples.jsonl").is_file() else group_rows(read_jsonl(out / "samples.jsonl"))
    for name, source, kind in targets:
        start = time.time()
        print(f"\n── {name} ({source}) " + "─" * max(0, 60 - len(name) - len(str(source))))
        dtype = baseline_dtype(cfg) if kind == "baseline" else "float32"
        mark = fingerprint(source, dtype, inputs) if backend == "hf-ladder" else None
        if mark and not rescore and unchanged(info.get(name, {}), results.get(name, {}), mark, tasks, earlier, name):
            samples += earlier.get(name, [])
            print(f"{name}: " + " · ".join(headline(results[name])) + " (unchanged since the last eval: kept)")
            continue
        try:
            model, tokenizer = load(source, dtype)
        except (OSError, ValueError, ImportError) as e:  # e.g. the Hub is unreachable: say so, measure nothing
            note = f"{source} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            print(f"not measured: {note}")
            info[name] = {"kind": kind, "model_dir": None, "parameters": None, "tokens_seen": None,
                          "measured": False, "note": note}
            results.pop(name, None)
            continue
        info[name] = {"kind": kind, "model_dir": str(source), "parameters": model.num_parameters(),
                      "tokens_seen": tokens_seen(run, kind), "measured": True,
                      "note": "the judge itself: its judge ppl is its own perplexity" if str(source) == cfg.judge
                      and prompt_sets else None,
                      "dtype": str(model.dtype).removeprefix("torch."),
                      "max_length": context_length(model, tokenizer, cfg.max_length),
                      **({"label": gguf_label(source)} if gguf_file(source) else {}),
                      **({"fingerprint": mark} if mark else {})}
        scores = results.setdefault(name, {})
        if backend == "lm-eval":
            scores.update(harness(model, tokenizer, tasks, limit_of(cfg.limit, None), cfg.batch_size,
                                  include_path, cfg.max_length))
        else:
            rung = score_rung(model, tokenizer, tasks, docs, validation_text, prompt_sets, recipe, judge)
            for task in rung.skipped:
                scores.pop(task, None)
            scores.update(rung.scores)
            samples += [{"rung": name, **row} for row in rung.samples]
            info[name]["seconds"] = {task: round(t, 2) for task, t in rung.seconds.items()}
            if rung.skipped:
                info[name]["skipped"] = rung.skipped
        print(f"{name}: " + " · ".join(headline(scores)) + f" ({time.time() - start:.0f} s)")
        del model
    write_json(out / "results.json", results)
    write_json(out / "rungs.json", info)
    if samples or "samples" in tasks:
        write_jsonl(out / "samples.jsonl", samples)
    return out


@dataclass
class RungScores:
    scores: dict[str, dict]  # {task: {metric: value}}
    samples: list[dict]  # the `samples` task's rows (side_by_side)
    seconds: dict[str, float]  # wall-clock seconds per task
    skipped: dict[str, str]  # task -> why it was not measured


def score_rung(model, tokenizer, tasks: list[str], docs: dict[str, list[dict]], validation_text: str,
               prompt_sets: dict[str, list[str]], recipe: Recipe, judge=None) -> RungScores:
    """One model on every task of `tasks` (heldout, the benchmarks with their `docs`, samples), each timed.
    A benchmark the model cannot take (an answer longer than its context: the harness fails too) is skipped
    with its reason."""
    cfg = recipe.eval or EvalConfig()
    scores, rows, seconds, skipped = {}, [], {}, {}
    for task in tasks:
        start = time.perf_counter()
        if task == "heldout":
            scores[task] = heldout(model, tokenizer, validation_text, cfg.max_length)
        elif task in benchmarks.BENCHMARKS:
            try:
                scores[task] = benchmarks.score(model, tokenizer, task, docs[task], cfg.batch_size,
                                                max_length=cfg.max_length)
            except ValueError as e:
                skipped[task] = str(e).splitlines()[0][:300]
                print(f"{task} not measured ({e})")
        elif task == "samples" and prompt_sets:
            rows = side_by_side(model, tokenizer, prompt_sets, recipe, judge)
            scores[task] = {**sample_means(rows), "ended_share": sum(r["ended"] for r in rows) / len(rows)}
        else:
            continue
        seconds[task] = time.perf_counter() - start
    return RungScores(scores, rows, seconds, skipped)


# --------------------------------------------------------------------------------------------- the rungs


def find_rungs(run: Run) -> dict[str, Path]:
    """Rung name -> model folder of every rung of every stage the manifest records as ended, in ladder order."""
    rungs = {}
    for stage in LADDER:
        result = run.finished(stage.name)
        if result is not None:
            rungs.update({rung: folder / "model" for rung, folder in stage.rung_folders(result, run).items()})
    return rungs


def baseline_name(source: str) -> str:
    """`openai-community/gpt2` -> `gpt2`; a local folder -> its name; `path/model.gguf` -> `model`; a packaged
    GGUF's short name (`smollm2-135m-instruct`) stays."""
    return Path(source.rstrip("/")).stem if source.endswith(".gguf") else Path(source.rstrip("/")).name


def gguf_label(source: str) -> str:
    """How the report names a GGUF baseline: what the weights are and that they were measured here."""
    path = gguf_file(source)
    quant = path.stem.rsplit(".", 1)[-1] if "." in path.stem else "GGUF"
    tuned = ", instruction-tuned" if "instruct" in path.stem.lower() else ""
    return f"{path.stem.split('.')[0]}{tuned}: {quant} GGUF weights dequantized, measured here"


def baseline_dtype(cfg: EvalConfig) -> str:
    """The dtype the baselines are scored in: `eval.baseline_dtype`, else bfloat16 where the device computes bf16
    natively (`modeling.native_bf16`), else float32."""
    return cfg.baseline_dtype or ("bfloat16" if native_bf16() else "float32")


def load(source: str | Path, dtype: str = "float32"):
    """(model, tokenizer) from any source `hf_ladder.modeling.load_model` takes (safetensors only, or GGUF), in
    eval mode, in `dtype` (float32 | bfloat16), on the accelerator when there is one (quantized checkpoints load
    with their saved quantization config and keep it)."""
    tokenizer = load_tokenizer(source)
    model = load_model(source)
    if getattr(model, "quantization_method", None) is None:
        model = model.to(device=device(), dtype=getattr(torch, dtype))
    return model.eval(), tokenizer


def tokens_seen(run: Run, kind: str) -> int | None:
    """Pretraining tokens behind a rung of this run (the fine-tuning stages add comparatively few)."""
    pretrain = run.finished("pretrain")
    return int(pretrain.metrics["tokens_seen"]) if kind != "baseline" and pretrain and \
        "tokens_seen" in pretrain.metrics else None


# ----------------------------------------------------------------------------------------------- scoring


def limit_of(limit: int | dict[str, int] | None, task: str | None) -> int | None:
    """`eval.limit` for one task: the number itself, or the task's entry of a {task: N} mapping (None = all)."""
    return limit.get(task) if isinstance(limit, dict) else limit


def benchmark_data(data_dir: str | None) -> str | None:
    """`eval.data_dir` when it exists; a folder that does not (a built-in recipe run away from the repository's
    shared data) falls back to the Hub datasets, with a note."""
    if data_dir is not None and not Path(data_dir).is_dir():
        print(f"eval: data_dir {data_dir} not found; reading the benchmarks from the Hub instead")
        return None
    return data_dir


def load_tasks(tasks: list[str], data_dir: str | None, limit: int | dict[str, int] | None
               ) -> tuple[dict[str, list[dict]], list[str]]:
    """The documents of every benchmark in `tasks` (`load_task`, at its `limit_of`), and `tasks` without the
    benchmarks whose data cannot be read."""
    docs = {t: load_task(t, data_dir, limit_of(limit, t)) for t in tasks if t in benchmarks.BENCHMARKS}
    return ({t: d for t, d in docs.items() if d is not None},
            [t for t in tasks if t not in benchmarks.BENCHMARKS or docs[t] is not None])


def load_task(task: str, data_dir: str | None, limit: int | None) -> list[dict] | None:
    """The task's documents, from `data_dir` or else the Hub, or None and why not: a benchmark that cannot be
    read is left out of every rung rather than reported with a made-up number."""
    try:
        return benchmarks.load(task, data_dir, limit)
    except Exception as e:  # a missing folder, the Hub unreachable, a malformed file: the reason is printed
        print(f"eval: {task} skipped: its data cannot be read from {data_dir or 'the Hub'} "
              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})")
        return None


def heldout(model, tokenizer, text: str, max_length: int | None = None) -> dict[str, float]:
    """Exact scores of the recipe's validation text in lm-eval's rolling windows of the model's context (at most
    `max_length` tokens, `hf_ladder.modeling.context_length`):
    token_perplexity, bits_per_byte, word_perplexity = exp(nats / len(re.split(r"\\s+", text))) as lm-eval's
    `word_perplexity` (lm_eval/api/metrics.py), and the counts."""
    s = score_text(model, tokenizer, text, context_length(model, tokenizer, max_length))
    words = len(re.split(r"\s+", text))
    return {"token_perplexity": s.perplexity, "bits_per_byte": s.bits_per_byte,
            "word_perplexity": math.exp(s.nats / words), "tokens": s.tokens, "bytes": s.bytes, "words": words}


def load_prompts(folder: str | Path | None) -> dict[str, list[str]]:
    """Prompt-set name -> prompts, from every `*.yaml` in `folder` (`name:` and `prompts:`; None: the built-in sets).

    Raises:
        RecipeError: the folder has no prompt set, or a file lacks a non-empty list of strings.
    """
    folder = Path(folder) if folder is not None else prompts_dir()
    sets = {}
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        prompts = data.get("prompts")
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise RecipeError(f"{path}: `prompts:` must be a non-empty list of non-empty strings")
        sets[data.get("name", path.stem)] = prompts
    if not sets:
        raise RecipeError(f"eval.prompts: no *.yaml prompt set in {folder}")
    return sets


def side_by_side(model, tokenizer, prompt_sets: dict[str, list[str]], recipe: Recipe, judge=None) -> list[dict]:
    """Every prompt continued with the recipe's `eval.generation` settings and seed (the same for every rung);
    rows of prompt_set, prompt, text, loss (nats/token under the model that wrote it), ended, and the readings
    of `hf_ladder.monitor.reading` (coherence, rep_4, distinct_2, judge_ppl, loss_tier)."""
    gen = (recipe.eval or EvalConfig()).generation
    if tokenizer.pad_token_id is None:  # GPT-2: left padding for batched generation needs a pad id
        tokenizer.pad_token = tokenizer.eos_token
    config = generation_config(tokenizer, gen.max_new_tokens, gen.temperature, gen.top_k, gen.top_p,
                               gen.repetition_penalty)
    rows = []
    for set_name, prompts in prompt_sets.items():
        batch = generate_batch(model, tokenizer, prompts, config, seed=recipe.seed)
        readings = read_samples(prompts, [s.text for s in batch], [s.loss for s in batch], judge)
        rows += [{"prompt_set": set_name, "prompt": prompt, "text": sample.text, "loss": finite_or_none(sample.loss),
                  **reading, "ended": sample.ended} for prompt, sample, reading in zip(prompts, batch, readings)]
    return rows


def reference_rows(prompt_sets: dict[str, list[str]], text: str, judge, chars: int = 200) -> list[dict]:
    """For each prompt that occurs in `text` (the validation split: "MACBETH:\n" in Macbeth), the real text after
    its first occurrence (up to `chars` characters, cut at a space), read like a sample: the anchor of the judge's
    scale (what a real line scores). Prompts not in the text get no row."""
    found = [(name, p, text.find(p)) for name, prompts in prompt_sets.items() for p in prompts]
    found = [(name, p, text[i + len(p): i + len(p) + chars].rsplit(" ", 1)[0]) for name, p, i in found if i >= 0]
    readings = read_samples([p for _, p, _ in found], [t for _, _, t in found], [None] * len(found), judge)
    return [{"prompt_set": name, "prompt": p, "text": t, "loss": None, **reading, "ended": False}
            for (name, p, t), reading in zip(found, readings)]


def sample_means(rows: list[dict]) -> dict[str, float]:
    """Mean coherence, rep_4, distinct_2 and judge_ppl of sample rows (judge_ppl over the judged ones)."""
    means = {f"{key}_mean": sum(r[key] for r in rows) / len(rows) for key in ("coherence", "rep_4", "distinct_2")}
    judged = [r["judge_ppl"] for r in rows if r["judge_ppl"] is not None]
    return {**means, **({"judge_ppl_mean": sum(judged) / len(judged)} if judged else {})}


def finite_or_none(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def harness(model, tokenizer, tasks: list[str], limit: int | None, batch_size: int,
            include_path: str | None = None, max_length: int | None = None) -> dict[str, dict]:
    """Any lm-evaluation-harness task on the in-memory model (`lm_eval.simple_evaluate` over `HFLM`, its
    max_length our `context_length` with `max_length`); metric keys lose lm-eval's filter suffix (`acc,none` -> `acc`).

    Raises:
        ImportError: lm-eval is not installed (`pip install 'hf_ladder[eval]'`).
    """
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError("--backend lm-eval needs lm-evaluation-harness: pip install 'hf_ladder[eval]'") from e
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
              max_length=context_length(model, tokenizer, max_length))
    out = simple_evaluate(model=lm, tasks=tasks, limit=limit, task_manager=TaskManager(include_path=include_path))
    return {task: {key.split(",")[0]: value for key, value in scores.items()
                   if isinstance(value, (int, float)) and key != "alias"}
            for task, scores in out["results"].items()}


def headline(scores: dict[str, dict]) -> list[str]:
    """The `console` metrics (hf_ladder.metrics) a rung has, for the one-line summary."""
    picks = [f"{m.column or m.label} {m.format(scores[m.source][m.key])}" for m in metrics.shown("console")
             if m.key in scores.get(m.source, {})]
    return picks or [f"{t}: {len(m)} metrics" for t, m in scores.items()]
