"""`hf-ladder`: the command line.

    hf-ladder recipes [copy NAME [DEST] [--force]]   the built-in recipes; copy one to edit
    hf-ladder run STAGE RECIPE [key=value ...] [--force]
    hf-ladder ladder RECIPE [key=value ...] [--force STAGE]
    hf-ladder validate RECIPE...
    hf-ladder eval RECIPE_OR_RUN_DIR [key=value ...] [--baseline ID_OR_PATH] [--tasks T,...] [--limit N]
                   [--data-dir DIR] [--backend lm-eval [--include-path DIR]] [--rescore]
    hf-ladder report RECIPE_OR_RUN_DIR
    hf-ladder push RUN_DIR/STAGE REPO_ID [--private] [--base-model HUB_ID]
    hf-ladder generate MODEL_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
    hf-ladder export RUN_DIR/STAGE --to gguf [--outtype f16|q8_0|f32] [--out FILE] [--force]
    hf-ladder dashboard RUN_DIR [--port 8686] [--host 127.0.0.1]

RECIPE is a YAML file or a built-in recipe's name (`shakespeare-tiny`). Overrides use dotted keys, before or after
the options: `pretrain.max_steps=40`, `run_dir=/somewhere`, `data.path=input.txt`. Every command checks its
arguments before it loads any data or model: a bad one is one line naming it, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from pathlib import Path

from hf_ladder import assets, metrics
from hf_ladder.allocator import keep_freed_memory
from hf_ladder.data.corpus import DataError
from hf_ladder.keys import check_value, field_types
from hf_ladder.runs import TrainingError, read_json
from hf_ladder.schema import EvalConfig, GenerationSettings, RecipeError


def check_options(args, cls: type, options: dict[str, str]) -> None:
    """Command-line options checked against the schema field each one sets (`hf_ladder.schema`: one declaration of
    every bound), before anything is loaded.

    Raises:
        RecipeError: naming each bad option.
    """
    errors: list[str] = []
    hints = field_types(cls)
    for option, name in options.items():
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            check_value(option, value, hints[name], errors)
    if errors:
        raise RecipeError("; ".join(errors))


def make_parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser (help and the list of commands) and one parser per command. Stage names are checked by
    the commands (against hf_ladder.stages), so that `hf-ladder recipes` and `--help` need not import the stack."""
    parser = argparse.ArgumentParser(prog="hf-ladder", description=__doc__.split("\n\n")[0].strip("` "),
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="list the built-in recipes, or copy one to edit")
    p.add_argument("action", nargs="?", choices=("list", "copy"), default="list")
    p.add_argument("name", nargs="?", help="copy: the built-in recipe (`hf-ladder recipes` lists them)")
    p.add_argument("dest", nargs="?", help="copy: the file or folder to write (default: ./NAME.yaml)")
    p.add_argument("--force", action="store_true", help="copy: overwrite DEST")

    p = sub.add_parser("run", help="run one stage of a recipe")
    p.add_argument("stage", help="a stage of the ladder: pretrain, sft, dpo, ... (hf_ladder.stages)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--force", action="store_true", help="redo the stage even if it already finished")

    p = sub.add_parser("ladder", help="run every stage of a recipe, bottom to top")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--force", metavar="STAGE", help="redo STAGE and every stage after it (eval: only the eval)")

    p = sub.add_parser("validate", help="check recipes without loading any data or model")
    p.add_argument("recipes", nargs="+")

    p = sub.add_parser("eval", help="score every rung of a run and a baseline; write the report")
    p.add_argument("target", metavar="RECIPE_OR_RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--baseline", action="append", help="a model to score beside the rungs: Hub id, folder, .gguf file "
                   "or packaged GGUF name (repeat for several; default: the recipe's eval.baselines); 'none' for none")
    p.add_argument("--tasks", help=f"comma-separated: {','.join(metrics.TASK_NAMES)} "
                                   "(with --backend lm-eval: any harness task)")
    p.add_argument("--limit", type=int, help="first N documents per task (MMLU: per subject)")
    p.add_argument("--data-dir", help="read the benchmarks from a folder laid out like the shared test data")
    p.add_argument("--backend", choices=("hf-ladder", "lm-eval"), default="hf-ladder")
    p.add_argument("--include-path", help="lm-eval backend: a folder of extra task YAMLs (lm-eval's --include_path)")
    p.add_argument("--rescore", action="store_true", help="score every rung again, even those whose models, data, "
                   "settings and code are unchanged since the last eval (by default their scores are kept)")

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

    p = sub.add_parser("export", help="a rung as a GGUF file for llama.cpp / Ollama, with its Modelfile")
    p.add_argument("stage_dir", metavar="RUN_DIR/STAGE",
                   help="runs/<recipe>/<stage>; a quantize/<variant> rung says how to export its source instead")
    p.add_argument("--to", choices=("gguf",), required=True)
    p.add_argument("--outtype", choices=("f16", "q8_0", "f32"), default="f16")
    p.add_argument("--out", help="the .gguf file (default: RUN_DIR/STAGE/gguf/<recipe>-<stage>-<outtype>.gguf)")
    p.add_argument("--force", action="store_true", help="write over an existing file")

    p = sub.add_parser("dashboard", help="a read-only web page that follows a run while it trains")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--port", type=int, default=8686)
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: localhost only)")
    return parser, dict(sub.choices)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command's arguments; `key=value` overrides may come before or after the options (argparse's
    intermixed parsing, per command: it does not span subcommands). Exits 2 with a usage line on bad input."""
    parser, commands = make_parsers()
    if not argv or argv[0] not in commands:
        return parser.parse_args(argv)  # --help, or the error naming the valid commands
    args = commands[argv[0]].parse_intermixed_args(argv[1:])
    args.command = argv[0]
    return args


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # glibc: no munmap / page faults for every step's tensors (hf_ladder.allocator)
    # TRL 1.16 still calls transformers' renamed `is_gradient_checkpointing`; nothing a user can act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        args = parse(sys.argv[1:] if argv is None else list(argv))
        return COMMANDS[args.command](args)
    except SystemExit as e:  # argparse: the usage line is printed; --help exits 0
        return e.code if isinstance(e.code, int) else 2
    except (RecipeError, DataError) as e:  # bad input: reported before any expensive work
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:  # e.g. a nan loss: the stage stopped, its last good checkpoint is kept
        print(f"error: {e}", file=sys.stderr)
        return 4


def cmd_recipes(args) -> int:
    if args.action == "list":
        for name, path in assets.builtin_recipes().items():
            print(f"{name:<26} {assets.describe(path)}")
        print("\nrun one: hf-ladder ladder NAME [key=value ...]; edit one: hf-ladder recipes copy NAME [DEST]")
        return 0
    if not args.name:
        raise RecipeError("recipes copy: name the built-in recipe to copy (`hf-ladder recipes` lists them)")
    src = assets.builtin_recipe(args.name)
    dest = Path(args.dest) if args.dest else Path(src.name)
    if dest.is_dir():
        dest = dest / src.name
    if dest.exists() and not args.force:
        raise RecipeError(f"{dest}: already exists; pass --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    print(f"{args.name} -> {dest}")
    return 0


def cmd_run(args) -> int:
    from hf_ladder.ladder import run_stage
    from hf_ladder.recipe import load_recipe
    from hf_ladder.stages import STAGE_NAMES

    if args.stage not in STAGE_NAMES:
        raise RecipeError(f"run: unknown stage {args.stage!r}; the ladder is {' -> '.join(STAGE_NAMES)}")
    result = run_stage(args.stage, load_recipe(args.recipe, args.overrides), force=args.force)
    return 0 if result.status == "finished" else 3


def cmd_ladder(args) -> int:
    from accelerate import PartialState

    from hf_ladder.eval.report import write_report
    from hf_ladder.eval.suite import evaluate_run
    from hf_ladder.ladder import run_ladder
    from hf_ladder.recipe import load_recipe
    from hf_ladder.runs import Run

    recipe = load_recipe(args.recipe, args.overrides)
    if args.force not in (None, "eval", *recipe.stages):
        raise RecipeError(f"--force {args.force}: not a stage of this ladder ({', '.join(recipe.stages)}) nor eval")
    results = run_ladder(recipe, force=None if args.force == "eval" else args.force)
    ok = bool(results) and all(r.status == "finished" for r in results)
    run = Run(recipe)
    if not PartialState().is_main_process:  # under `accelerate launch`: the eval and the table are the main one's
        return 0 if ok else 3
    if ok and recipe.eval is not None:
        scores = run.root / "eval" / "results.json"  # done unless a stage finished after it
        done = args.force is None and scores.exists() and scores.stat().st_mtime >= run.manifest_path.stat().st_mtime
        if done:
            print(f"\neval: already in {run.root / 'eval'}; `hf-ladder eval {args.recipe}` or --force eval redoes it")
        else:
            print(f"\n==== eval · recipe {recipe.name} · {run.root / 'eval'} ====", flush=True)
            evaluate_run(recipe, rescore=args.force == "eval")
        print(f"\nreport: {write_report(run.root)}")
    print_rungs(results, run)
    return 0 if ok else 3


def print_rungs(results, run) -> None:
    """The ladder's closing table: a row per rung, a column per `rungs` eval metric (hf_ladder.metrics), and
    the stage's own `rungs` readings beside it."""
    from hf_ladder.stages import STAGES

    eval_dir = run.root / "eval"
    scores, info = read_json(eval_dir / "results.json", {}), read_json(eval_dir / "rungs.json", {})
    columns = [m for m in metrics.shown("rungs") if m.source in metrics.TASK_NAMES]
    rows = []
    for r in results:
        rungs = STAGES[r.stage].rung_folders(r, run)
        rows += [(rung, r.status, r.metrics if rung == r.stage else {}) for rung in rungs]
    rows += [(name, "baseline" if i["measured"] else "not measured", {}) for name, i in info.items()
             if i["kind"] == "baseline"]
    rows += [(name, "reference", {}) for name, i in info.items() if i["kind"] == "reference"]
    header = " ".join(f"{m.column or m.label:>12}" for m in columns)
    print(f"\n{'rung':<22} {'status':<9} {header}   stage readings")
    for name, status, own in rows:
        cells = [m.format(scores.get(name, {}).get(m.source, {}).get(m.key)) for m in columns]
        stage = name.split("/")[0]
        readings = [f"{m.label} {m.format(own[m.key])}" for m in metrics.shown("rungs", stage) if m.key in own]
        print(f"{name:<22} {status:<9} " + " ".join(f"{c:>12}" for c in cells) + "   " + " · ".join(readings))


def cmd_eval(args) -> int:
    from hf_ladder.eval.report import write_report
    from hf_ladder.eval.suite import evaluate_run
    from hf_ladder.recipe import load_recipe

    check_options(args, EvalConfig, {"--limit": "limit"})
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    if args.backend == "hf-ladder" and tasks:
        bad = [t for t in tasks if t not in metrics.TASK_NAMES]
        if bad:
            raise RecipeError(f"--tasks: unknown task(s) {', '.join(bad)}; ours are {', '.join(metrics.TASK_NAMES)} "
                              f"(any lm-evaluation-harness task: --backend lm-eval)")
    for option, folder in (("--data-dir", args.data_dir), ("--include-path", args.include_path)):
        if folder and not Path(folder).is_dir():
            raise RecipeError(f"{option}: {folder} is not a folder")
    if args.include_path and args.backend != "lm-eval":
        raise RecipeError("--include-path: only with --backend lm-eval")
    from hf_ladder.modeling import source_problem

    baselines = [b for b in args.baseline or [] if b.lower() != "none"]
    for source in baselines:
        if problem := source_problem(source):
            raise RecipeError(f"--baseline: {problem}")
    overrides = list(args.overrides)
    if args.baseline:
        overrides.append(f"eval.baselines={json.dumps(baselines)}")
    if args.limit is not None:
        overrides.append(f"eval.limit={args.limit}")
    if args.data_dir:
        overrides.append(f"eval.data_dir={args.data_dir}")
    recipe = load_recipe(args.target, overrides)
    folder = evaluate_run(recipe, tasks, backend=args.backend, include_path=args.include_path, rescore=args.rescore)
    print(f"\nresults: {folder / 'results.json'}\nreport:  {write_report(folder.parent)}")
    return 0


def cmd_report(args) -> int:
    from hf_ladder.eval.report import write_report
    from hf_ladder.recipe import load_recipe

    run_dir = Path(args.target)  # a run directory (its manifest is all the report needs), or a recipe's run_dir
    if not (run_dir / "manifest.json").is_file():
        run_dir = Path(load_recipe(args.target).run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise RecipeError(f"{run_dir}: no run here yet (no manifest.json); run `hf-ladder ladder {args.target}`")
    print(write_report(run_dir))
    return 0


def cmd_push(args) -> int:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from hf_ladder.hub import push

    try:
        validate_repo_id(args.repo_id)
        if args.base_model:
            validate_repo_id(args.base_model)
        url = push(Path(args.stage_dir), args.repo_id, private=args.private, base_model=args.base_model)
    except (HFValidationError, FileNotFoundError, KeyError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.stage_dir} -> https://huggingface.co/{args.repo_id} ({url})")
    return 0


def cmd_validate(args) -> int:
    from hf_ladder.recipe import load_recipe

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
    check_options(args, GenerationSettings, {"--max-new-tokens": "max_new_tokens", "--temperature": "temperature",
                                             "--top-k": "top_k", "--top-p": "top_p"})
    from hf_ladder.modeling import source_problem

    if problem := source_problem(args.model_dir):
        raise RecipeError(f"model_dir: {problem}")
    if Path(args.model_dir).is_dir() and not (Path(args.model_dir) / "config.json").is_file():
        raise RecipeError(f"{args.model_dir}: not a model folder (no config.json)")
    if not args.prompt:
        raise RecipeError("--prompt: give a non-empty prompt")
    from hf_ladder.generate import generate, generation_config
    from hf_ladder.modeling import load_model, load_tokenizer

    try:
        tokenizer = load_tokenizer(args.model_dir)
        model = load_model(args.model_dir)
    except OSError as e:  # a Hub id that cannot be fetched, or a folder without safetensors weights
        raise RecipeError(f"{args.model_dir}: cannot load the model ({str(e).splitlines()[0]})") from None
    config = generation_config(tokenizer, args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    sample = generate(model, tokenizer, args.prompt, config, seed=args.seed)
    print(args.prompt + sample.text)
    print(f"\n[{'greedy' if args.temperature == 0 else 'sampled'} · {sample.tokens} tokens · "
          f"{'ended' if sample.ended else 'length limit'} · loss {sample.loss:.3f} nats/token]", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from hf_ladder.export import describe, export_gguf

    print(describe(export_gguf(args.stage_dir, args.outtype, args.out, args.force)))
    return 0


def cmd_dashboard(args) -> int:
    from hf_ladder.dashboard import serve

    serve(args.run_dir, args.host, args.port)
    return 0


COMMANDS = {"recipes": cmd_recipes, "run": cmd_run, "ladder": cmd_ladder, "validate": cmd_validate,
            "eval": cmd_eval, "report": cmd_report, "push": cmd_push, "generate": cmd_generate,
            "export": cmd_export, "dashboard": cmd_dashboard}

if __name__ == "__main__":
    sys.exit(main())
