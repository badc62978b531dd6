"""Pretrain: a custom small GPT learns the corpus from scratch, on `transformers.Trainer`.

Reads: the recipe's data, tokenizer and model sections; `pretrain:` holds TrainingArguments keys (and HubArgs').
Writes: runs/<recipe>/pretrain/ (see hf_ladder/runs.py). A rerun resumes from the last checkpoint.
Reports: train / validation loss, perplexity, bits per character and per byte on the whole validation
text (and on as much training text, for the gap), tokens/s, wall time, and the monitor's readings.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoTokenizer, Trainer, TrainingArguments, default_data_collator, set_seed

from hf_ladder.data.corpus import load_corpus
from hf_ladder.data.packing import LMBlocks, pack
from hf_ladder.data.tokenizer import encode_documents, get_tokenizer
from hf_ladder.eval.perplexity import score_text
from hf_ladder.modeling import build_model, context_length, describe_scale
from hf_ladder.monitor import SampleMonitor
from hf_ladder.runs import Context, StageResult
from hf_ladder.schema import ExportArgs, HubArgs, RecipeError
from hf_ladder.stages.common import (
    Stage,
    global_batch,
    monitor_metrics,
    status_of,
    train,
    training_defaults,
    write_outputs,
)


def run(cfg: dict, ctx: Context) -> StageResult:
    """Pretrain the recipe's model on its corpus (`cfg["args"]`: TrainingArguments keys) and score it.

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
    with PartialState().main_process_first():  # one process trains and saves the tokenizer, the others load it
        tokenizer = _tokenizer(recipe, corpus.train, out / "tokenizer")
    train_blocks = pack(encode_documents(tokenizer, corpus.train), block_size)  # (n_train, block_size)
    val_blocks = pack(encode_documents(tokenizer, corpus.validation), block_size)  # (n_val, block_size)
    eval_blocks = evenly_spaced(val_blocks, recipe.data.max_eval_samples)  # what the Trainer evaluates while training
    print(f"data: {corpus.source}\n      train {sum(map(len, corpus.train)):,} chars -> {train_blocks.numel():,} "
          f"tokens in {len(train_blocks):,} blocks of {block_size}; validation "
          f"{len(corpus.validation_text):,} chars -> {len(val_blocks):,} blocks"
          + (f" ({len(eval_blocks)} evaluated while training)" if len(eval_blocks) < len(val_blocks) else ""))

    model = build_model(recipe.model, tokenizer)
    if block_size > (positions := context_length(model)):
        raise RecipeError(f"data.block_size: {block_size} is above the model's context ({positions} positions)")
    args = TrainingArguments(output_dir=str(out / "checkpoints"), **training_defaults(cfg["args"], ctx.recipe))
    batch = global_batch(args)
    steps = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs * len(train_blocks) / batch)
    print(describe_scale(model, train_blocks.numel(), steps * batch * block_size))
    print(f"batch: {args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation "
          f"x {args.world_size} process(es) = {batch} blocks = {batch * block_size:,} tokens per step")

    monitor = SampleMonitor(recipe.monitor, tokenizer, corpus.train, out / "samples.jsonl", seed=recipe.seed)
    trainer = Trainer(model=model, args=args, train_dataset=LMBlocks(train_blocks),
                      eval_dataset=LMBlocks(eval_blocks), data_collator=default_data_collator,
                      processing_class=tokenizer, callbacks=[monitor])
    output, first_step, kept = train(trainer, monitor)

    # the numbers: exact scores on the whole validation text and on as much training text
    val_score = score_text(model, tokenizer, corpus.validation_text, block_size)
    train_sample = "\n\n".join(corpus.train)[: len(corpus.validation_text)]
    train_score = score_text(model, tokenizer, train_sample, block_size)
    tokens_per_step = batch * block_size
    tokens_run = (trainer.state.global_step - first_step) * tokens_per_step
    total = model.num_parameters()
    metrics = {
        **val_score.as_metrics("val_"), **train_score.as_metrics("train_"),
        "train_val_gap": val_score.loss - train_score.loss,
        "tokens_per_second": tokens_run / max(output.metrics["train_runtime"], 1e-9),
        "train_runtime_s": output.metrics["train_runtime"],
        "global_step": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * tokens_per_step,
        "parameters": total, "parameters_non_embedding": model.num_parameters(exclude_embeddings=True),
        "tokens_per_parameter": trainer.state.global_step * tokens_per_step / total,
        **kept, **monitor_metrics(monitor),
    }
    status, reason = status_of(monitor)
    metrics["wall_time_s"] = time.time() - start
    write_outputs("pretrain", ctx, trainer, monitor, model, tokenizer, metrics)
    print(f"pretrain {status}: val loss {val_score.loss:.3f} (ppl {val_score.perplexity:.1f}) | "
          f"{val_score.bits_per_char:.3f} bits/char | {val_score.bits_per_byte:.3f} bits/byte | train-val gap "
          f"{metrics['train_val_gap']:+.3f} nats | {metrics['tokens_per_second']:,.0f} tokens/s"
          + (f"\n{reason}" if reason else ""))
    return StageResult(stage="pretrain", status=status, model_dir=str(out / "model"), metrics=metrics,
                       reason=reason, wall_time_s=time.time() - start,
                       inputs={"data": corpus.source, "tokenizer": recipe.tokenizer.path or
                               f"byte-level BPE trained here (vocab {len(tokenizer)})",
                               "init_from": recipe.model.get("init_from"), "world_size": args.world_size,
                               "per_device_train_batch_size": args.per_device_train_batch_size,
                               "global_batch": batch, "block_size": block_size})


def evenly_spaced(blocks: torch.Tensor, n: int | None) -> torch.Tensor:
    """`n` rows of `blocks` (rows, block_size) spread evenly over it (first and last included), or all of them."""
    if n is None or n >= len(blocks):
        return blocks
    return blocks[torch.linspace(0, len(blocks) - 1, n).round().long()]  # (n, block_size)


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


STAGE = Stage(name="pretrain", parts={"hub": HubArgs, "export": ExportArgs, "args": TrainingArguments}, run=run,
              summary="This rung is the pretrained model: next-token prediction on raw text.")
