"""`hf-ladder`: the command line.

    hf-ladder run STAGE RECIPE [key=value ...] [--force]
    hf-ladder ladder RECIPE [key=value ...] [--force STAGE]
    hf-ladder validate RECIPE...
    hf-ladder generate MODEL_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]

Overrides use dotted keys: `pretrain.max_steps=40`, `run_dir=/somewhere`, `data.path=input.txt`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from hf_ladder.data.corpus import DataError
from hf_ladder.recipe import STAGE_ORDER, RecipeError, load_recipe


def main(argv: list[str] | None = None) -> int:
    # TRL 1.16 still calls transformers' renamed `is_gradient_checkpointing`; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    parser = argparse.ArgumentParser(prog="hf-ladder", description=__doc__.split("\n\n")[0].strip("` "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run one stage of a recipe")
    p.add_argument("stage", choices=STAGE_ORDER)
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--force", action="store_true", help="redo the stage even if it already finished")

    p = sub.add_parser("ladder", help="run every stage of a recipe, bottom to top")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--force", metavar="STAGE", choices=STAGE_ORDER, help="redo STAGE and every stage after it")

    p = sub.add_parser("validate", help="check recipes without loading any data or model")
    p.add_argument("recipes", nargs="+")

    p = sub.add_parser("generate", help="continue a prompt with a saved model")
    p.add_argument("model_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (RecipeError, DataError) as e:  # bad recipe or data: reported before any expensive work
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_run(args) -> int:
    from hf_ladder.ladder import run_stage

    result = run_stage(args.stage, load_recipe(args.recipe, args.overrides), force=args.force)
    return 0 if result.status == "finished" else 3


# What the rung table shows for each stage: (label, metric, format).
HEADLINES = {
    "pretrain": [("val bits/char", "val_bits_per_char", ".3f"), ("val loss", "val_loss", ".3f"),
                 ("train-val gap", "train_val_gap", "+.3f")],
    "sft": [("held-out loss", "heldout_loss_after", ".3f"), ("before", "heldout_loss_before", ".3f"),
            ("ends with eos", "eos_rate_after", ".0%")],
    "dpo": [("held-out margin", "heldout_rewards_margins_after", "+.3f"),
            ("reward acc", "heldout_rewards_accuracies_after", ".0%"), ("pref acc", "pref_accuracy_after", ".0%"),
            ("before", "pref_accuracy_before", ".0%"), ("ends with eos", "eos_rate_after", ".0%")],
}


def cmd_ladder(args) -> int:
    from hf_ladder.ladder import run_ladder

    results = run_ladder(load_recipe(args.recipe, args.overrides), force=args.force)
    print("\nrung      status    readings")
    for r in results:
        cells = [f"{label} {r.metrics[key]:{fmt}}" for label, key, fmt in HEADLINES.get(r.stage, [])
                 if key in r.metrics]
        cells.append(f"coherence {r.metrics.get('coherence_final', float('nan')):.0f}")
        print(f"{r.stage:<9} {r.status:<9} " + " · ".join(cells))
    return 0 if results and all(r.status == "finished" for r in results) else 3


def cmd_validate(args) -> int:
    failed = 0
    for path in args.recipes:
        try:
            recipe = load_recipe(path)
        except RecipeError as e:
            print(f"FAIL {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"ok   {path}: {recipe.name} · stages: {', '.join(recipe.stages) or '(none)'} · run_dir {recipe.run_dir}")
    return 1 if failed else 0


def cmd_generate(args) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ladder.generate import generate, generation_config

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, use_safetensors=True)
    config = generation_config(tokenizer, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    sample = generate(model, tokenizer, args.prompt, config, seed=args.seed)
    print(args.prompt + sample.text)
    print(f"\n[{'greedy' if args.temperature == 0 else 'sampled'} · {sample.tokens} tokens · "
          f"{'ended' if sample.ended else 'length limit'} · loss {sample.loss:.3f} nats/token]", file=sys.stderr)
    return 0


COMMANDS = {"run": cmd_run, "ladder": cmd_ladder, "validate": cmd_validate, "generate": cmd_generate}

if __name__ == "__main__":
    sys.exit(main())
