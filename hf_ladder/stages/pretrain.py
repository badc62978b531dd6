"""Pretrain: a custom small GPT learns the corpus from scratch, on `transformers.Trainer`.

Reads: the recipe's data, tokenizer and model sections; `pretrain:` holds TrainingArguments keys.
Writes: runs/<recipe>/pretrain/ (see hf_ladder/runs.py). A rerun resumes from the last checkpoint.
Reports: train / validation loss, perplexity, bits per character and per byte on the whole validation
text (and on as much training text, for the gap), tokens/s, wall time, and the monitor's readings.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from transformers import AutoTokenizer, Trainer, TrainingArguments, default_data_collator, set_seed

from hf_ladder.data.corpus import load_corpus
from hf_ladder.data.packing import lm_dataset, pack
from hf_ladder.data.tokenizer import encode_documents, get_tokenizer
from hf_ladder.eval.perplexity import score_text
from hf_ladder.generate import generation_config
from hf_ladder.modeling import build_model, context_length, count_parameters, describe_scale
from hf_ladder.monitor.callback import SampleMonitor
from hf_ladder.plots import plot_losses
from hf_ladder.recipe import RecipeError, accelerator_available
from hf_ladder.runs import Context, StageResult, save_model, write_json, write_yaml


def run(cfg: dict, ctx: Context) -> StageResult:
    """Pretrain the recipe's model on its corpus (`cfg`: TrainingArguments keys) and score it.

    Raises:
        DataError: the corpus is missing, empty or unreadable (before any model is built).
        RecipeError: the block size does not fit an `init_from` model's context.
    """
    start = time.time()
    recipe, out = ctx.recipe, ctx.run.stage_dir("pretrain")
    out.mkdir(parents=True, exist_ok=True)
    set_seed(recipe.seed)
    block_size = recipe.data.block_size

    # data and tokenizer: cheap, and every bad input fails here, before a model exists
    corpus = load_corpus(recipe.data)
    tokenizer = _tokenizer(recipe, corpus.train, out / "tokenizer")
    train_blocks = pack(encode_documents(tokenizer, corpus.train), block_size)  # (n_train, block_size)
    val_blocks = pack(encode_documents(tokenizer, corpus.validation), block_size)  # (n_val, block_size)
    print(f"data: {corpus.source}\n      train {sum(map(len, corpus.train)):,} chars -> {train_blocks.numel():,} "
          f"tokens in {len(train_blocks):,} blocks of {block_size}; validation "
          f"{len(corpus.validation_text):,} chars -> {len(val_blocks):,} blocks")

    model = build_model(recipe.model, tokenizer)
    if (ctx_len := context_length(model)) is not None and block_size > ctx_len:
        raise RecipeError(f"data.block_size: {block_size} is above the model's context ({ctx_len} positions)")
    args = training_arguments(cfg, ctx, out)
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    steps = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs * len(train_blocks) / global_batch)
    print(describe_scale(model, train_blocks.numel(), steps * global_batch * block_size))
    print(f"batch: {args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation "
          f"x {args.world_size} process(es) = {global_batch} blocks = {global_batch * block_size:,} tokens per step")

    monitor = SampleMonitor(recipe.monitor, tokenizer, corpus.train, out / "samples.jsonl", seed=recipe.seed)
    trainer = Trainer(model=model, args=args, train_dataset=lm_dataset(train_blocks),
                      eval_dataset=lm_dataset(val_blocks), data_collator=default_data_collator,
                      processing_class=tokenizer, callbacks=[monitor])
    last = last_complete_checkpoint(Path(args.output_dir))
    if last:
        print(f"resuming from {last}")
    elif monitor.samples_path.exists():
        monitor.samples_path.unlink()  # samples of an earlier attempt that left no checkpoint
    first_step = int(Path(last).name.split("-")[-1]) if last else 0
    if first_step == 0:
        monitor.sample_round(model, 0, write=trainer.is_world_process_zero())  # what an untrained model says
    output = trainer.train(resume_from_checkpoint=last)

    # the numbers: exact scores on the whole validation text and on as much training text
    val = score_text(model, tokenizer, corpus.validation_text, block_size)
    train_sample = "\n\n".join(corpus.train)[: len(corpus.validation_text)]
    train = score_text(model, tokenizer, train_sample, block_size)
    tokens_per_step = global_batch * block_size
    tokens_run = (trainer.state.global_step - first_step) * tokens_per_step
    total, non_embedding = count_parameters(model)
    metrics = {
        **val.as_metrics("val_"), **train.as_metrics("train_"),
        "train_val_gap": val.loss - train.loss,
        "tokens_per_second": tokens_run / max(output.metrics["train_runtime"], 1e-9),
        "train_runtime_s": output.metrics["train_runtime"],
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "parameters": total, "parameters_non_embedding": non_embedding,
        "tokens_per_parameter": trainer.state.global_step * tokens_per_step / total,
        "coherence_final": monitor.rounds[-1]["coherence"],
        "memorization_alerts": sum(a["type"] == "memorization" for a in monitor.alerts),
        "overfitting_alerts": sum(a["type"] == "overfitting" for a in monitor.alerts),
        "halted": int(monitor.halted is not None),
    }
    status, reason = "finished", None
    if monitor.halted:
        status, reason = "halted", monitor.halted
    elif monitor.stopped_overfit:
        status, reason = "stopped", monitor.stopped_overfit

    if trainer.is_world_process_zero():
        g = recipe.monitor.generation
        model.generation_config = generation_config(tokenizer, g.max_new_tokens, g.temperature, g.top_k, g.top_p,
                                                    g.repetition_penalty)
        save_model(model, tokenizer, out / "model")
        metrics["wall_time_s"] = time.time() - start
        write_json(out / "metrics.json", metrics)
        write_json(out / "log_history.json", trainer.state.log_history)
        write_json(out / "alerts.json", monitor.alerts)
        write_yaml(out / "recipe.resolved.yaml", recipe.to_dict())
        plot_losses(trainer.state.log_history, out / "loss.png", f"{recipe.name} · pretrain", monitor.alerts,
                    halted_step=trainer.state.global_step if monitor.halted else None)
    print(f"pretrain {status}: val loss {val.loss:.3f} (ppl {val.perplexity:.1f}) | "
          f"{val.bits_per_char:.3f} bits/char | {val.bits_per_byte:.3f} bits/byte | train-val gap "
          f"{metrics['train_val_gap']:+.3f} nats | {metrics['tokens_per_second']:,.0f} tokens/s"
          + (f"\n{reason}" if reason else ""))
    return StageResult(stage="pretrain", status=status, model_dir=str(out / "model"), metrics=metrics,
                       reason=reason, wall_time_s=time.time() - start,
                       inputs={"data": corpus.source, "tokenizer": recipe.tokenizer.path or
                               f"byte-level BPE trained here (vocab {len(tokenizer)})",
                               "init_from": recipe.model.get("init_from"), "world_size": args.world_size,
                               "per_device_train_batch_size": args.per_device_train_batch_size,
                               "global_batch": global_batch, "block_size": block_size})


def training_arguments(cfg: dict, ctx: Context, out: Path) -> TrainingArguments:
    """The recipe's TrainingArguments over the ladder's defaults: the CPU when there is no accelerator,
    evaluate, sample and checkpoint on the monitor's rhythm, keep two checkpoints, log to the console only,
    use the recipe's seed."""
    every = ctx.recipe.monitor.sample_every
    defaults = {"use_cpu": not accelerator_available(), "eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every,
                "save_total_limit": 2, "logging_steps": max(1, min(every // 2, 50)), "report_to": "none",
                "seed": ctx.recipe.seed, "per_device_eval_batch_size": cfg.get("per_device_train_batch_size", 8)}
    return TrainingArguments(output_dir=str(out / "checkpoints"), **{**defaults, **cfg})


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` that the Trainer finished writing (its `trainer_state.json` is written last
    and parses). Newer, half-written ones, left by a run killed while saving, are removed."""
    steps = sorted((int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name[11:].isdigit())
    for _, path in reversed(steps):
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            return str(path)
        except (OSError, ValueError):
            print(f"removing {path}: incomplete (the run was stopped while saving it)")
            shutil.rmtree(path)
    return None


def _tokenizer(recipe, train_docs: list[str], saved: Path):
    """The stage's tokenizer: the recipe's, else `init_from`'s, else a BPE trained on the training split;
    kept in the stage folder, so a resumed run uses the same one."""
    if saved.is_dir():
        return AutoTokenizer.from_pretrained(saved)
    cfg = recipe.tokenizer
    if cfg.path is None and recipe.model.get("init_from"):
        cfg = dataclasses.replace(cfg, path=recipe.model["init_from"])
    tokenizer = get_tokenizer(cfg, train_docs, model_max_length=recipe.data.block_size)
    tokenizer.save_pretrained(saved)
    return tokenizer
