"""`hf-ladder`: the command line.

    hf-ladder run STAGE RECIPE [key=value ...] [--force]
    hf-ladder ladder RECIPE [key=value ...] [--force STAGE]
    hf-ladder validate RECIPE...
    hf-ladder eval RECIPE_OR_RUN_DIR [key=value ...] [--baseline ID_OR_PATH] [--tasks T,...] [--limit N]
                   [--data-dir DIR] [--backend lm-eval [--include-path DIR]]
    hf-ladder report RECIPE_OR_RUN_DIR
    hf-ladder push RUN_DIR/STAGE REPO_ID [--private] [--base-model HUB_ID]
    hf-ladder generate MODEL_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]

Overrides use dotted keys: `pretrain.max_steps=40`, `run_dir=/somewhere`, `data.path=input.txt`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from hf_ladder.data.corpus import DataError
from hf_ladder.recipe import STAGE_ORDER, RecipeError, load_recipe
from hf_ladder.runs import TrainingError


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
    p.add_argument("--force", metavar="STAGE", choices=(*STAGE_ORDER, "eval"),
                   help="redo STAGE and every stage after it (eval: only the eval)")

    p = sub.add_parser("validate", help="check recipes without loading any data or model")
    p.add_argument("recipes", nargs="+")

    p = sub.add_parser("eval", help="score every rung of a run and a baseline; write the report")
    p.add_argument("target", metavar="RECIPE_OR_RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--baseline", help="Hub id or folder (default: the recipe's eval.baseline, openai-community/gpt2); "
                                      "'none' for no baseline")
    p.add_argument("--tasks", help="comma-separated: heldout,wikitext,hellaswag,lambada_openai,mmlu,mmlu_5shot,samples "
                                   "(with --backend lm-eval: any harness task)")
    p.add_argument("--limit", type=int, help="first N documents per task (MMLU: per subject)")
    p.add_argument("--data-dir", help="read the benchmarks from a folder laid out like ../shared/data")
    p.add_argument("--backend", choices=("hf-ladder", "lm-eval"), default="hf-ladder")
    p.add_argument("--include-path", help="lm-eval backend: a folder of extra task YAMLs (lm-eval's --include_path)")

    p = sub.add_parser("report", help="(re)write the report of a run from its files")
    p.add_argument("target", metavar="RECIPE_OR_RUN_DIR")

    p = sub.add_parser("push", help="upload a stage's model with its model card to the Hugging Face Hub")
    p.add_argument("stage_dir", metavar="RUN_DIR/STAGE",
                   help="runs/<recipe>/<stage> or runs/<recipe>/quantize/<variant>")
    p.add_argument("repo_id", metavar="REPO_ID")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--base-model", help="Hub id of the pushed model this stage started from (card metadata)")

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
    except TrainingError as e:  # e.g. a nan loss: the stage stopped, its last good checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        return 4


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
    "lora": [("target ppl", "target_perplexity_after", ".1f"), ("before", "target_perplexity_before", ".1f"),
             ("other plays ppl", "other_perplexity_after", ".1f"), ("before", "other_perplexity_before", ".1f"),
             ("trainable %", "trainable_percent", ".2f")],
}


def cmd_ladder(args) -> int:
    from hf_ladder.eval.report import write_report
    from hf_ladder.eval.suite import evaluate_run
    from hf_ladder.ladder import run_ladder
    from hf_ladder.runs import Run

    recipe = load_recipe(args.recipe, args.overrides)
    results = run_ladder(recipe, force=None if args.force == "eval" else args.force)
    ok = bool(results) and all(r.status == "finished" for r in results)
    run = Run(recipe)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`: the eval and the table are the main one's
        return 0 if ok else 3
    if ok and recipe.eval is not None:
        done = (run.root / "eval" / "results.json").exists() and args.force is None
        if done:
            print(f"\neval: already in {run.root / 'eval'}; `hf-ladder eval {args.recipe}` or --force eval redoes it")
        else:
            print(f"\n==== eval · recipe {recipe.name} · {run.root / 'eval'} ====", flush=True)
            evaluate_run(recipe)
        print(f"\nreport: {write_report(run.root)}")
    print_rungs(results, run.root / "eval" / "results.json")
    return 0 if ok else 3


# The rung table: (label, task, metric, format) from eval/results.json, then each stage's own headline.
EVAL_COLUMNS = [("held-out bpb", "heldout", "bits_per_byte", ".3f"),
                ("wikitext bpb", "wikitext", "bits_per_byte", ".3f"),
                ("hellaswag", "hellaswag", "acc_norm", ".1%"), ("lambada", "lambada_openai", "acc", ".1%"),
                ("mmlu", "mmlu", "acc", ".1%"), ("coherence", "samples", "coherence_mean", ".0f")]


def print_rungs(results, results_path: Path) -> None:
    """The ladder's closing table: one row per rung with its eval numbers and its stage's headline."""
    from hf_ladder.runs import read_json

    scores, info = read_json(results_path, {}), read_json(results_path.with_name("rungs.json"), {})
    rungs = [(r.stage, r.status, r.metrics) for r in results if r.stage != "quantize"]
    quantize = next((r for r in results if r.stage == "quantize"), None)
    if quantize is not None:
        rungs += [(f"quantize/{v}", quantize.status, {}) for v in quantize.inputs.get("variants", {})]
    rungs += [(name, "baseline" if i["measured"] else "not measured", {}) for name, i in info.items()
              if i["kind"] == "baseline"]
    head = f"\n{'rung':<20} {'status':<9} " + " ".join(f"{label:>12}" for label, *_ in EVAL_COLUMNS)
    print(head + "   stage readings")
    for name, status, metrics in rungs:
        cells = [f"{scores[name][task][metric]:{fmt}}" if metric in scores.get(name, {}).get(task, {}) else "—"
                 for _, task, metric, fmt in EVAL_COLUMNS]
        own = [f"{label} {metrics[key]:{fmt}}" for label, key, fmt in HEADLINES.get(name, []) if key in metrics]
        print(f"{name:<20} {status:<9} " + " ".join(f"{c:>12}" for c in cells) + "   " + " · ".join(own))


def cmd_eval(args) -> int:
    from hf_ladder.eval.report import write_report
    from hf_ladder.eval.suite import evaluate_run, recipe_of

    overrides = list(args.overrides)
    if args.baseline:
        overrides.append("eval.baseline=null" if args.baseline.lower() == "none" else f"eval.baseline={args.baseline}")
    if args.limit is not None:
        overrides.append(f"eval.limit={args.limit}")
    if args.data_dir:
        overrides.append(f"eval.data_dir={args.data_dir}")
    recipe = recipe_of(args.target, overrides)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    folder = evaluate_run(recipe, tasks, backend=args.backend, include_path=args.include_path)
    print(f"\nresults: {folder / 'results.json'}\nreport:  {write_report(folder.parent)}")
    return 0


def cmd_report(args) -> int:
    from hf_ladder.eval.report import write_report
    from hf_ladder.eval.suite import recipe_of

    print(write_report(Path(recipe_of(args.target).run_dir)))
    return 0


def cmd_push(args) -> int:
    from hf_ladder.hub import push

    try:
        url = push(Path(args.stage_dir), args.repo_id, private=args.private, base_model=args.base_model)
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as e:  # HFValidationError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.stage_dir} -> https://huggingface.co/{args.repo_id} ({url})")
    return 0


def cmd_validate(args) -> int:
    failed = 0
    for path in args.recipes:
        try:
            if is_accelerate_config(path):
                print(f"ok   {path}: {check_accelerate_config(path)}")
                continue
            recipe = load_recipe(path)
        except RecipeError as e:
            print(f"FAIL {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"ok   {path}: {recipe.name} · stages: {', '.join(recipe.stages) or '(none)'} · run_dir {recipe.run_dir}")
    return 1 if failed else 0


def is_accelerate_config(path: str) -> bool:
    """An `accelerate config` file (recipes/accelerate/*.yaml) rather than a ladder recipe."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "distributed_type" in raw


def check_accelerate_config(path: str) -> str:
    """Parse an accelerate config with accelerate's own loader and launcher checks; a one-line summary.

    Raises:
        RecipeError: accelerate rejects the file (unknown keys, impossible settings).
    """
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    try:
        cluster = load_config_from_file(path)
        _validate_launch_command(launch_command_parser().parse_args(["--config_file", path, "-m", "hf_ladder.cli"]))
    except (ValueError, TypeError, KeyError) as e:
        raise RecipeError(f"{path}: accelerate rejects this config: {e}") from e
    return f"accelerate config · {cluster.distributed_type.value} · {cluster.num_processes} process(es)"


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


COMMANDS = {"run": cmd_run, "ladder": cmd_ladder, "validate": cmd_validate, "eval": cmd_eval, "report": cmd_report,
            "push": cmd_push, "generate": cmd_generate}

if __name__ == "__main__":
    sys.exit(main())
