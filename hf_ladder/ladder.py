"""Run one stage or the whole ladder of a recipe, through the run manifest.

A stage that the manifest records as ended is not run again unless forced; forcing a stage forgets it
and every stage above it. A stage that halted (collapsed samples) or stopped (overfitting) ends the
ladder: the stages above would only build on a broken model.
"""

from __future__ import annotations

import shutil

from accelerate import PartialState

from hf_ladder.recipe import STAGE_ORDER, Recipe, RecipeError
from hf_ladder.runs import Context, Run, StageResult


def run_stage(stage: str, recipe: Recipe, force: bool = False) -> StageResult:
    """Run `stage` of `recipe` (or return its recorded result when it already ended and `force` is off).

    Raises:
        RecipeError: the stage does not exist, is not available yet, or the recipe has no section for it.
    """
    from hf_ladder.stages import STAGES

    if stage not in STAGE_ORDER:
        raise RecipeError(f"unknown stage {stage!r}; the ladder is {' -> '.join(STAGE_ORDER)}")
    if stage not in STAGES:
        raise RecipeError(f"stage {stage!r} is not available yet; available: {', '.join(STAGES)}")
    if stage not in recipe.stages:
        raise RecipeError(f"{recipe.source}: no {stage!r} section; add one (it may be empty) to run this stage")
    run = Run(recipe)
    done = run.finished(stage)
    if done is not None and not force:
        print(f"{stage}: already {done.status} in {run.stage_dir(stage)} (manifest); "
              f"pass --force to redo it. {done.reason or ''}".rstrip())
        return done
    if force and PartialState().is_main_process:
        run.forget(stage)
        out = run.stage_dir(stage)
        for name in ("checkpoints", "tokenizer", "samples.jsonl"):  # model/ stays until the new one replaces it
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    state = PartialState()  # under `accelerate launch`: one process records and publishes, all wait for it
    if stage == "quantize" and not state.is_main_process:  # nothing to train: the main process does it alone
        state.wait_for_everyone()
        return run.finished(stage)
    print(f"\n==== {stage} · recipe {recipe.name} · {run.stage_dir(stage)} ====", flush=True)
    result = STAGES[stage](recipe.stages[stage], Context(recipe=recipe, run=run, previous=run.previous(stage),
                                                         force=force))
    if state.is_main_process:
        run.record(result)
        if recipe.stages[stage].get("push_to_hub") and result.status == "finished":
            publish(stage, recipe, run)
    state.wait_for_everyone()  # the next stage, on every process, reads this manifest and model
    return result


def publish(stage: str, recipe: Recipe, run: Run) -> None:
    """Push the finished stage (each variant of `quantize` to `<hub_model_id>-<variant>`) with its model card.
    A failed push (e.g. no network) is reported with the command to retry; the stage stays finished."""
    from hf_ladder.hub import push

    cfg = recipe.stages[stage]
    result = run.finished(stage)
    targets = ([(run.stage_dir(stage) / v, f"{cfg['hub_model_id']}-{v}") for v in result.inputs.get("variants", {})]
               if stage == "quantize" else [(run.stage_dir(stage), cfg["hub_model_id"])])
    for folder, repo_id in targets:
        try:
            url = push(folder, repo_id, private=cfg.get("hub_private_repo", False))
            print(f"{stage}: pushed to https://huggingface.co/{repo_id} ({url})")
        except Exception as e:  # the model is safe on disk; the push can be retried
            print(f"{stage}: push to {repo_id} failed ({type(e).__name__}: {e}); retry with "
                  f"`hf-ladder push {folder} {repo_id}`")


def run_ladder(recipe: Recipe, force: str | None = None) -> list[StageResult]:
    """Every stage the recipe has a section for, bottom to top; `force` redoes that stage and those above."""
    from hf_ladder.stages import STAGES

    stages = [s for s in STAGE_ORDER if s in recipe.stages and s in STAGES]
    missing = [s for s in recipe.stages if s not in STAGES]
    if missing:
        print(f"note: {', '.join(missing)} not available yet; running {', '.join(stages)}")
    if force is not None and force not in stages:
        raise RecipeError(f"--force {force}: not a stage of this ladder ({', '.join(stages)})")
    results = []
    for stage in stages:
        redo = force is not None and STAGE_ORDER.index(stage) >= STAGE_ORDER.index(force)
        result = run_stage(stage, recipe, force=redo)
        results.append(result)
        if result.status != "finished":
            print(f"ladder stops after {stage}: {result.status} ({result.reason})")
            break
    return results
