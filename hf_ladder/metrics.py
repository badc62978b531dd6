"""Every figure hf_ladder reports, declared once: the eval's tasks and their metrics, and each stage's own readings.

The ladder's closing table (`hf-ladder ladder`), the eval's console lines, the report's tables and charts, the
quantization table and the model card's `model-index` all read these declarations. A new metric is one line in
METRICS; a new eval task is one line in TASKS (its scorer: `hf_ladder.eval.benchmarks`).

Where a figure is shown, `views` says:
    rungs         a column of the ladder's closing table (eval tasks) or a stage reading beside it (stages)
    console       the one-line summary `hf-ladder eval` prints per rung
    report        a column of the report's benchmark table
    chart         a panel of the report's ladder chart (ladder.png)
    card          an entry of the model card's model-index (stage readings: with `held_out`, the data measured on)
    quantization  a column of the quantization table (quantize stage, per variant: `<variant>_<key>`)
This module imports nothing from hf_ladder.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """An eval task: its name in recipes and eval/results.json, and the Hub dataset it is measured on."""

    name: str
    title: str
    dataset: str | None = None  # Hub dataset id (the model-index's dataset type)
    config: str | None = None
    split: str | None = None
    shots: int = 0


# In the order results, tables and charts show them.
TASKS = (
    Task("heldout", "held-out text (the recipe's validation split)"),
    Task("wikitext", "WikiText-2", "wikitext", "wikitext-2-raw-v1", "test"),
    Task("hellaswag", "HellaSwag", "Rowan/hellaswag", None, "validation"),
    Task("lambada_openai", "LAMBADA (OpenAI)", "EleutherAI/lambada_openai", "default", "test"),
    Task("mmlu", "MMLU", "cais/mmlu", "all", "test"),
    Task("mmlu_5shot", "MMLU 5-shot", "cais/mmlu", "all", "test", shots=5),
    Task("samples", "side-by-side samples (eval/prompts)"),
)
TASK_NAMES = tuple(t.name for t in TASKS)


@dataclass(frozen=True)
class Metric:
    """One reported figure: `key` in `source`'s numbers (an eval task's results.json entry, or a stage's
    metrics.json), shown as `label` (`column` in the narrow closing table) in the format `fmt` (a format spec,
    applied after multiplying by `scale`)."""

    source: str  # an eval task or a stage name
    key: str
    label: str
    fmt: str
    higher_is_better: bool | None  # None: neither (a size, a speed, a count)
    unit: str = ""
    views: frozenset[str] = frozenset()
    column: str = ""  # the closing table's header; defaults to `label`
    scale: float = 1.0
    log_scale: bool = False  # charts: plot on a log axis
    card_type: str = ""  # model-index metric type; defaults to `key`
    held_out: str = ""  # stage readings in the card: validation | heldout | target | other

    def format(self, value: float | None, missing: str = "—") -> str:
        """`value` as this metric is shown everywhere ("24.0%", "2.349", "1.95"), or `missing`."""
        return missing if value is None else format(value * self.scale, self.fmt)

    @property
    def percent(self) -> bool:
        return self.fmt.endswith("%")


def _m(source, key, label, fmt, higher, unit="", views="", **kw) -> Metric:
    return Metric(source, key, label, fmt, higher, unit, frozenset(views.split()), **kw)


METRICS = (
    # ---- eval tasks (eval/results.json) ----
    _m("heldout", "bits_per_byte", "held-out bits/byte", ".3f", False, "bits/byte", "rungs console report chart",
       column="held-out bpb"),
    _m("heldout", "token_perplexity", "held-out token perplexity", ".1f", False, "", "report"),
    _m("wikitext", "bits_per_byte", "WikiText bits/byte", ".3f", False, "bits/byte",
       "rungs console report chart card", column="wikitext bpb"),
    _m("wikitext", "word_perplexity", "WikiText word perplexity", ".2f", False, "", "report chart", log_scale=True),
    _m("hellaswag", "acc", "HellaSwag acc", ".1%", True, "%", "report"),
    _m("hellaswag", "acc_norm", "HellaSwag acc_norm", ".1%", True, "%", "rungs console report chart card",
       column="hellaswag"),
    _m("lambada_openai", "acc", "LAMBADA acc", ".1%", True, "%", "rungs console report chart card",
       column="lambada"),
    _m("lambada_openai", "perplexity", "LAMBADA perplexity", ".2f", False, "", "report chart", log_scale=True),
    _m("mmlu", "acc", "MMLU 0-shot acc", ".1%", True, "%", "rungs console report chart card", column="mmlu"),
    _m("mmlu_5shot", "acc", "MMLU 5-shot acc", ".1%", True, "%", "console report chart", column="mmlu-5"),
    _m("samples", "judge_ppl_mean", "judge ppl", ".1f", False, "", "rungs console report chart", column="judge ppl",
       log_scale=True),
    _m("samples", "rep_4_mean", "rep_4", ".2f", False, "", "rungs console report"),
    _m("samples", "distinct_2_mean", "distinct_2", ".2f", True, "", "report"),
    _m("samples", "coherence_mean", "coherence", ".0f", True, "0-100", "rungs console report"),
    # ---- each stage's own readings (<stage>/metrics.json) ----
    _m("pretrain", "val_bits_per_char", "val bits/char", ".3f", False, "bits/char", "rungs card",
       card_type="bits_per_char", held_out="validation"),
    _m("pretrain", "val_loss", "val loss", ".3f", False, "nats/token", "rungs card", card_type="loss",
       held_out="validation"),
    _m("pretrain", "val_perplexity", "val perplexity", ".1f", False, "", "card", card_type="perplexity",
       held_out="validation"),
    _m("pretrain", "train_val_gap", "train-val gap", "+.3f", None, "nats/token", "rungs"),
    _m("sft", "heldout_loss_after", "held-out loss", ".3f", False, "nats/token", "rungs card", card_type="loss",
       held_out="heldout"),
    _m("sft", "heldout_loss_before", "before", ".3f", False, "nats/token", "rungs"),
    _m("sft", "heldout_perplexity_after", "held-out perplexity", ".1f", False, "", "card", card_type="perplexity",
       held_out="heldout"),
    _m("sft", "eos_rate_after", "ends with eos", ".0%", True, "%", "rungs card", card_type="eos_rate",
       held_out="heldout"),
    _m("dpo", "heldout_loss_after", "held-out loss", ".3f", False, "nats/token", "card", card_type="loss",
       held_out="heldout"),
    _m("dpo", "heldout_rewards_margins_after", "held-out margin", "+.3f", True, "nats", "rungs card",
       card_type="rewards_margin", held_out="heldout"),
    _m("dpo", "heldout_rewards_accuracies_after", "reward acc", ".0%", True, "%", "rungs card",
       card_type="rewards_accuracy", held_out="heldout"),
    _m("dpo", "pref_accuracy_after", "pref acc", ".0%", True, "%", "rungs card", card_type="preference_accuracy",
       held_out="heldout"),
    _m("dpo", "pref_accuracy_before", "before", ".0%", True, "%", "rungs"),
    _m("dpo", "eos_rate_after", "ends with eos", ".0%", True, "%", "rungs card", card_type="eos_rate",
       held_out="heldout"),
    _m("lora", "target_loss_after", "target loss", ".3f", False, "nats/token", "card", card_type="loss",
       held_out="target"),
    _m("lora", "target_perplexity_after", "target ppl", ".1f", False, "", "rungs card", card_type="perplexity",
       held_out="target"),
    _m("lora", "target_perplexity_before", "before", ".1f", False, "", "rungs"),
    _m("lora", "target_bits_per_char_after", "target bits/char", ".3f", False, "bits/char", "card",
       card_type="bits_per_char", held_out="target"),
    _m("lora", "other_perplexity_after", "other plays ppl", ".1f", False, "", "rungs card", card_type="perplexity",
       held_out="other"),
    _m("lora", "other_perplexity_before", "before", ".1f", False, "", "rungs"),
    _m("lora", "other_bits_per_char_after", "other plays bits/char", ".3f", False, "bits/char", "card",
       card_type="bits_per_char", held_out="other"),
    _m("lora", "trainable_percent", "trainable %", ".2f", None, "%", "rungs"),
    # ---- the quantize stage, per variant (metrics.json: <variant>_<key>) ----
    _m("quantize", "disk_bytes", "disk MB", ".2f", False, "MB", "quantization", scale=1e-6),
    _m("quantize", "memory_bytes", "memory MB", ".2f", False, "MB", "quantization", scale=1e-6),
    _m("quantize", "linear_bytes", "linear layers MB", ".2f", False, "MB", "quantization", scale=1e-6),
    _m("quantize", "linear_bytes_ratio", "× fp32 (linear)", ".2f", False, "", "quantization"),
    _m("quantize", "loss", "loss", ".4f", False, "nats/token", "card", held_out="validation"),
    _m("quantize", "perplexity", "perplexity", ".2f", False, "", "quantization card", held_out="validation"),
    _m("quantize", "perplexity_change", "Δ perplexity", "+.2%", False, "%", "quantization"),
    _m("quantize", "bits_per_byte", "bits/byte", ".4f", False, "bits/byte", "quantization card",
       held_out="validation"),
    _m("quantize", "tokens_per_second", "tokens/s", ".0f", True, "tokens/s", "quantization"),
)


def shown(view: str, source: str | None = None) -> list[Metric]:
    """The metrics shown in `view`, in declaration order; of one task or stage when `source` is given."""
    return [m for m in METRICS if view in m.views and (source is None or m.source == source)]


def find(source: str, key: str) -> Metric | None:
    """The declaration of `key` of a task or stage, or None when it has none."""
    return next((m for m in METRICS if (m.source, m.key) == (source, key)), None)


def task(name: str) -> Task:
    """The declaration of an eval task. Raises KeyError for an unknown name."""
    for t in TASKS:
        if t.name == name:
            return t
    raise KeyError(name)
