"""What every stage shares: the declaration a stage makes (`Stage`), the ladder's TrainingArguments defaults,
resuming from the last complete checkpoint, the model a stage starts from, and writing the stage's outputs."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from datasets import Dataset
from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import default_logdir

from hf_ladder.generate import generation_config
from hf_ladder.modeling import context_length, device, fp32_logits, load_tokenizer, native_bf16
from hf_ladder.monitor import SampleMonitor
from hf_ladder.monitor.trackers import Trackers
from hf_ladder.plots import plot_losses
from hf_ladder.runs import Context, Run, StageResult, TrainingError, save_model, write_json, write_yaml
from hf_ladder.schema import Recipe, RecipeError

EOS_PROMPTS = 50  # held-out prompts whose greedy answers SFT and DPO check for eos


def one_rung(stage: str, result: StageResult, stage_dir: Path) -> dict[str, Path]:
    """A stage that leaves one model: its rung is the stage, its model in `stage_dir/model`."""
    return {stage: stage_dir}


@dataclass(frozen=True)
class Stage:
    """What a stage declares, in its own file; `hf_ladder.stages.LADDER` lists the declarations bottom to top, and
    the command line, the ladder, the recipe checker, the eval and the hub read them.

    `parts` maps a part name to the class whose fields are valid keys of the stage's recipe section (a key
    belongs to the first class that has it). `run(cfg, ctx)` gets `cfg` = {part: checked value}: an instance of
    hf_ladder's own classes (`hf_ladder.schema`), or the keyword arguments of a library class.
    """

    name: str
    parts: dict[str, type]
    run: Callable[[dict[str, Any], Context], StageResult]
    summary: str  # the model card's first sentence about this rung ({v}: the variant)
    check: Callable[[dict[str, Any], list[str]], None] | None = None  # extra checks of the parts, into the list
    main_process_only: bool = False  # nothing to train: under `accelerate launch` one process does it
    rungs: Callable[[str, StageResult, Path], dict[str, Path]] = field(default=one_rung)  # rung -> folder of model/

    def rung_folders(self, result: StageResult, run: Run) -> dict[str, Path]:
        """Rung name -> the folder holding its model/ (`quantize/int8` -> runs/<recipe>/quantize/int8)."""
        return self.rungs(self.name, result, run.stage_dir(self.name))


def training_defaults(args: dict, recipe: Recipe) -> dict:
    """The recipe's training arguments over the ladder's defaults: the CPU when there is no accelerator,
    bf16 autocast where the device computes bf16 natively (`modeling.native_bf16`; else fp32, and a recipe's
    explicit `bf16: true` there is kept but warned about), evaluate, sample and checkpoint on the monitor's
    rhythm, keep two checkpoints: the last and the one of the best validation loss (with `metric_for_best_model`
    the Trainer tracks it and keeps it out of rotation, for `keep_best`), log to TensorBoard
    (`<stage>/checkpoints/runs/`; `report_to: wandb` or `none` in the recipe), let a nan / inf loss through to
    the monitor's divergence check (transformers would average it away), use the recipe's seed. Publishing is
    hf-ladder's, after the stage (`hf_ladder.hub`), never the Trainer's."""
    every = recipe.monitor.sample_every
    defaults = {"use_cpu": device() == "cpu", "eval_strategy": "steps", "eval_steps": every,
                "save_strategy": "steps", "save_steps": every, "save_total_limit": 2,
                "metric_for_best_model": "eval_loss",
                "logging_steps": max(1, min(every // 2, 50)), "report_to": "tensorboard", "seed": recipe.seed,
                "logging_nan_inf_filter": False,
                "per_device_eval_batch_size": args.get("per_device_train_batch_size", 8),
                "bf16": native_bf16() and not args.get("fp16")}
    if args.get("bf16") and device() == "cpu" and not native_bf16():  # (a GPU without it: transformers refuses)
        print(f"warning: bf16: true on a CPU without native bf16 (its best kernels: "
              f"{torch.backends.cpu.get_cpu_capability()}): bf16 matmuls run tens of times slower than fp32 here; "
              f"leave `bf16` out of the recipe and the ladder trains in fp32 on this machine", flush=True)
    return {**defaults, **args, "push_to_hub": False}


def global_batch(args) -> int:
    """Sequences per optimizer step: per device x gradient accumulation x processes."""
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def base_model(stage: str, cfg: dict, ctx: Context) -> str:
    """The model a stage starts from: `model_name_or_path` in its recipe section (the `source` part), else the
    model of the stage below it in the run manifest.

    Raises:
        RecipeError: neither exists.
    """
    if cfg["source"].model_name_or_path:
        return cfg["source"].model_name_or_path
    if ctx.previous is None:
        raise RecipeError(f"{stage}: no model to start from; run the stage below it first "
                          f"(e.g. `hf-ladder run pretrain {ctx.recipe.source}`) or set {stage}.model_name_or_path")
    print(f"{stage}: starting from {ctx.previous.stage} ({ctx.previous.model_dir})")
    return ctx.previous.model_dir


def tuning_tokenizer(stage: str, base: str, pad_token: str | None = None):
    """The base model's tokenizer, checked for fine-tuning: pad must differ from eos. `pad_token` (the stage's
    `pad_token` key) replaces the tokenizer's own pad token first; the tuned model's tokenizer keeps it.

    Raises:
        RecipeError: `pad_token` is not one token of the vocabulary, or pad is missing or equals eos (padding
            would mask the eos labels, and the model would never learn to stop).
    """
    tokenizer = load_tokenizer(base)
    if pad_token is not None:
        if pad_token not in tokenizer.get_vocab():
            raise RecipeError(f"{stage}.pad_token: {pad_token!r} is not a token of {base}'s vocabulary; "
                              f"its special tokens are {tokenizer.all_special_tokens}")
        tokenizer.pad_token = pad_token
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        spare = [t for t in tokenizer.all_special_tokens if t not in (tokenizer.eos_token, tokenizer.bos_token)]
        how = (f"set {stage}.pad_token to a distinct token of its vocabulary (e.g. {stage}.pad_token={spare[0]})"
               if spare else "give it a distinct pad token (the ladder's own BPE tokenizer has one)")
        own = "" if tokenizer.pad_token_id is not None else ", having no pad token of its own"
        raise RecipeError(f"{stage}: the tokenizer of {base} pads with its eos token ({tokenizer.eos_token!r}{own}); "
                          f"padding would mask the eos labels and the model would never learn to stop: {how}")
    return tokenizer


def check_max_length(stage: str, max_length: int | None, model) -> None:
    """Raises RecipeError when `max_length` is above the model's context (positions would overflow)."""
    positions = context_length(model)
    if max_length and max_length > positions:
        raise RecipeError(f"{stage}.max_length: {max_length} is above the model's context ({positions} positions)")


def prompt_tokens(row: dict, tokenizer) -> int:
    """Tokens of a row's prompt as TRL sees it (bos included where the tokenizer adds it; for `messages`:
    every turn but the last, plus the assistant header)."""
    if "messages" in row:
        text = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return len(tokenizer(row["prompt"])["input_ids"])


def drop_long_prompts(stage: str, rows: Dataset, tokenizer, max_length: int) -> tuple[Dataset, int]:
    """Drop the rows whose prompt alone fills `max_length`: truncation would leave nothing of their
    completion to train on. Returns (kept rows, number dropped) and says how many went.

    Raises:
        RecipeError: no row is left.
    """
    kept = rows.select([i for i, r in enumerate(rows) if prompt_tokens(r, tokenizer) < max_length])
    if len(kept) < len(rows):
        print(f"{stage}: dropped {len(rows) - len(kept):,} of {len(rows):,} rows whose prompt alone fills "
              f"max_length={max_length}: none of their completion would be trained")
    if not kept:
        raise RecipeError(f"{stage}.max_length: {max_length} tokens leave no room for any completion; raise it")
    return kept, len(rows) - len(kept)


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` that the Trainer finished writing (its `trainer_state.json` is written last
    and parses). Newer, half-written ones, left by a run killed while saving, are removed. (transformers'
    `get_last_checkpoint` returns the newest folder whether or not it was written whole.)"""
    steps = sorted((int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name[11:].isdigit())
    for _, path in reversed(steps):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return str(path)
        except (OSError, ValueError):
            print(f"removing {path}: incomplete (the run was stopped while saving it)")
            shutil.rmtree(path, ignore_errors=True)  # another process may be removing it too
    return None


def tensorboard_in_stage(trainer) -> None:
    """Point the Trainer's TensorBoard writer at `<output_dir>/runs/<date>_<host>/`, where `train()` would put it,
    before anything is logged. transformers 5.24's `TensorBoardCallback` chooses that folder in `on_train_begin`
    but opens its writer at the first log, so an `evaluate()` before `train()` (the "before" numbers) would
    open it in the working directory's `./runs/` and the whole stage would log there (SFT and DPO call this)."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(Path(trainer.args.output_dir) / default_logdir())


def train(trainer, monitor: SampleMonitor):
    """Train, resuming from the last complete checkpoint; a fresh start first samples the untrained model
    (step 0), so every stage shows its samples before and after. Under bf16 / fp16 autocast the LM head's logits
    leave it in fp32 (`modeling.fp32_logits`: one cast a step where the loss and accelerate's wrapper made two).
    Then choose the weights the stage keeps (`keep_best`).

    Returns:
        (the Trainer's TrainOutput, the step training started from, `keep_best`'s metrics).

    Raises:
        TrainingError: the loss or the weights went nan / inf (the monitor stopped training before any
            checkpoint could hold them; the last checkpoint is the last good one and stays).
    """
    last = last_complete_checkpoint(Path(trainer.args.output_dir))
    if last:
        print(f"resuming from {last}")
    elif trainer.is_world_process_zero():  # samples and alerts of an earlier attempt that left no checkpoint
        monitor.samples_path.unlink(missing_ok=True)
        monitor.samples_path.with_name("alerts.json").unlink(missing_ok=True)
    first_step = int(Path(last).name.split("-")[-1]) if last else 0
    if trainer.is_world_process_zero():  # samples and alerts in TensorBoard / W&B too, beside the Trainer's logs
        monitor.trackers = Trackers(trainer.args.report_to, Path(trainer.args.output_dir) / "runs" / "samples",
                                    purge_step=first_step + 1 if last else None)
    if first_step == 0:
        monitor.sample_round(trainer.model, 0, write=trainer.is_world_process_zero())
    if trainer.args.world_size > 1 and trainer.model_wrapped is trainer.model:
        # Trainer.evaluate() before train() (sft, dpo: the "before" numbers) marks the bare model prepared; train()
        # would then skip the DDP wrap and every process would train alone (transformers 5.24, accelerate 1.15).
        trainer.model.__dict__.pop("_is_accelerate_prepared", None)
    with fp32_logits(trainer.model):
        output = trainer.train(resume_from_checkpoint=last)
    if monitor.diverged:
        good = last_complete_checkpoint(Path(trainer.args.output_dir))
        raise TrainingError(f"{Path(trainer.args.output_dir).parent.name}: {monitor.diverged}; training stopped and "
                            f"nothing was saved. Last good checkpoint: {good or 'none'} (kept). Lower the learning "
                            f"rate or set max_grad_norm, then rerun (add --force to start over).")
    return output, first_step, keep_best(trainer, monitor)


def keep_best(trainer, monitor: SampleMonitor) -> dict[str, float]:
    """The weights the stage keeps: after an overfitting alert, those of the best-validation checkpoint (the
    Trainer's `best_model_checkpoint` by `metric_for_best_model`, loaded with the Trainer's own loader), unless
    `monitor.keep_best_on_overfit` is false; with `load_best_model_at_end: true` in the stage's section the
    Trainer has loaded them already, alert or not. Else the last step's. Says which in the console after an
    alert or when the best checkpoint is kept.

    Returns:
        `kept_best` (1: the best checkpoint, 0: the last step), `kept_step`, and `kept_eval_loss` (its
        validation loss) when that step was evaluated.
    """
    state, args = trainer.state, trainer.args
    key = args.metric_for_best_model or "eval_loss"
    key = key if key.startswith("eval_") else f"eval_{key}"
    best = state.best_model_checkpoint
    best_step = int(Path(best).name.split("-")[-1]) if best else None
    overfit = any(a["type"] == "overfitting" for a in monitor.alerts)
    wanted = args.load_best_model_at_end or (overfit and monitor.cfg.keep_best_on_overfit)
    kept_best = wanted and best_step not in (None, state.global_step)
    if kept_best and not args.load_best_model_at_end:
        trainer._load_best_model()  # what load_best_model_at_end calls: full weights, peft adapters, sharded
    step = best_step if kept_best else state.global_step

    def at(s: int) -> str:
        value = _logged(state.log_history, key, s)
        return f"step {s} ({key} {value:.3f})" if value is not None else f"step {s}"

    last = f"the last, {at(state.global_step)}"
    if kept_best:
        why = ("load_best_model_at_end" if args.load_best_model_at_end else
               "overfitting alert; `monitor.keep_best_on_overfit: false` keeps the last step")
        note = f"model/ is the best-validation checkpoint, {at(best_step)}, not {last} ({why})"
    elif overfit and not monitor.cfg.keep_best_on_overfit:
        note = f"model/ is {last}, as `monitor.keep_best_on_overfit: false` asks" + (
            f"; the best-validation checkpoint, {at(best_step)}, is {best}"
            if best_step not in (None, state.global_step) else "")
    elif overfit and best is None:
        note = (f"model/ is {last}: after the overfitting alert no checkpoint of the best {key} was there to load "
                f"(save_steps {args.save_steps}, eval_steps {args.eval_steps}); save at every evaluation to keep it")
    elif overfit:
        note = f"model/ is {last}, the best-validation checkpoint too: validation recovered after the alert"
    else:
        note = None
    if note and trainer.is_world_process_zero():
        print(note, flush=True)
    loss = _logged(state.log_history, "eval_loss", step)
    return {"kept_best": int(kept_best), "kept_step": step, **({"kept_eval_loss": loss} if loss is not None else {})}


def _logged(log_history: list[dict], key: str, step: int) -> float | None:
    """The value of `key` the Trainer logged at `step` (the last one logged there), if any."""
    values = [h[key] for h in log_history if key in h and h["step"] == step]
    return values[-1] if values else None


def status_of(monitor: SampleMonitor) -> tuple[str, str | None]:
    """("finished" | "halted" | "stopped", reason) from the monitor's readings."""
    if monitor.halted:
        return "halted", monitor.halted
    if monitor.stopped_overfit:
        return "stopped", monitor.stopped_overfit
    return "finished", None


def monitor_metrics(monitor: SampleMonitor) -> dict[str, float]:
    """The monitor's readings as flat metrics."""
    return {"coherence_final": monitor.rounds[-1]["coherence"],
            "memorization_alerts": sum(a["type"] == "memorization" for a in monitor.alerts),
            "overfitting_alerts": sum(a["type"] == "overfitting" for a in monitor.alerts),
            "halted": int(monitor.halted is not None)}


def write_outputs(stage: str, ctx: Context, trainer, monitor: SampleMonitor, model, tokenizer,
                  metrics: dict[str, float]) -> None:
    """Save the model (with the recipe's decoding as its generation_config) and the stage's files
    (metrics.json, log_history.json, alerts.json, recipe.resolved.yaml, loss.png), on the main process."""
    if not trainer.is_world_process_zero():
        return
    out, recipe = ctx.run.stage_dir(stage), ctx.recipe
    g = recipe.monitor.generation
    model.generation_config = generation_config(tokenizer, g.max_new_tokens, g.temperature, g.top_k, g.top_p,
                                                g.repetition_penalty)
    save_model(model, tokenizer, out / "model")
    write_json(out / "metrics.json", metrics)
    write_json(out / "log_history.json", trainer.state.log_history)
    write_json(out / "alerts.json", monitor.alerts)
    write_yaml(out / "recipe.resolved.yaml", recipe.to_dict())
    plot_losses(trainer.state.log_history, out / "loss.png", f"{recipe.name} · {stage}", monitor.alerts,
                halted_step=trainer.state.global_step if monitor.halted else None)
