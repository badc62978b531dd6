"""Run one stage or the whole ladder of a recipe, through the run manifest.

A stage that the manifest records as ended is not run again unless forced; forcing a stage forgets it
and every stage above it. A stage that halted (collapsed samples) or stopped (overfitting) ends the
ladder: the stages above would only build on a broken model. The order is `hf_ladder.stages.LADDER`.
"""

from __future__ import annotations

import shutil

from accelerate import PartialState

from hf_ladder.export import describe, export_gguf
from hf_ladder.hub import push
from hf_ladder.runs import Context, Run, StageResult
from hf_ladder.schema import Recipe, RecipeError
from hf_ladder.stages import STAGE_NAMES, STAGES


def previous(run: Run, stage: str) -> StageResult | None:
    """The nearest stage below `stage` on the ladder that the manifest records."""
    below = STAGE_NAMES[: STAGE_NAMES.index(stage)]
    return next((result for name in reversed(below) if (result := run.finished(name)) is not None), None)


def context(stage: str, recipe: Recipe) -> Context:
    """What `stage` gets besides its recipe section: the recipe, the run directory, the stage below it."""
    run = Run(recipe)
    return Context(recipe=recipe, run=run, previous=previous(run, stage))


def run_stage(stage: str, recipe: Recipe, force: bool = False) -> StageResult:
    """Run `stage` of `recipe` (or return its recorded result when it already ended and `force` is off).

    Raises:
        RecipeError: the stage does not exist or the recipe has no section for it.
    """
    if stage not in STAGES:
        raise RecipeError(f"unknown stage {stage!r}; the ladder is {' -> '.join(STAGE_NAMES)}")
    if stage not in recipe.stages:
        raise RecipeError(f"{recipe.source}: no {stage!r} section; add one (it may be empty) to run this stage")
    run = Run(recipe)
    done = run.finished(stage)
    if done is not None and not force:
        print(f"{stage}: already {done.status} in {run.stage_dir(stage)} (manifest); "
              f"pass --force to redo it. {done.reason or ''}".rstrip())
        return done
    state = PartialState()  # under `accelerate launch`: one process records and publishes, all wait for it
    if force and state.is_main_process:
        run.drop(STAGE_NAMES[STAGE_NAMES.index(stage):])  # this stage and every one above it
        out = run.stage_dir(stage)
        for name in ("checkpoints", "tokenizer", "samples.jsonl", "alerts.json", "log_history.json"):  # model/ stays
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if STAGES[stage].main_process_only and not state.is_main_process:
        state.wait_for_everyone()
        return run.finished(stage)
    ctx = Context(recipe=recipe, run=run, previous=previous(run, stage))
    print(f"\n==== {stage} · recipe {recipe.name} · {run.stage_dir(stage)} ====", flush=True)
    result = STAGES[stage].run(recipe.stages[stage], ctx)
    if state.is_main_process:
        run.record(result)
        if recipe.stages[stage]["hub"].push_to_hub and result.status == "finished":
            publish(stage, recipe, run)
        export = recipe.stages[stage].get("export")
        if export is not None and export.export.to and result.status == "finished":
            export_rungs(stage, export.export.outtype, run)
    state.wait_for_everyone()  # the next stage, on every process, reads this manifest and model
    return result


def publish(stage: str, recipe: Recipe, run: Run) -> None:
    """Push each rung of the finished stage (a quantize variant to `<hub_model_id>-<variant>`) with its model
    card. A failed push (e.g. no network) is reported with the command to retry; the stage stays finished."""
    hub = recipe.stages[stage]["hub"]
    for rung, folder in STAGES[stage].rung_folders(run.finished(stage), run).items():
        repo_id = hub.hub_model_id + ("" if rung == stage else f"-{rung.split('/')[-1]}")
        try:
            url = push(folder, repo_id, private=bool(hub.hub_private_repo))
            print(f"{stage}: pushed to https://huggingface.co/{repo_id} ({url})")
        except Exception as e:  # the model is safe on disk; the push can be retried
            print(f"{stage}: push to {repo_id} failed ({type(e).__name__}: {e}); retry with "
                  f"`hf-ladder push {folder} {repo_id}`")


def export_rungs(stage: str, outtype: str, run: Run) -> None:
    """The finished stage's rungs as GGUF files (the stage section's `export:`), written over earlier exports
    of the same stage: the stage itself was just redone. A failure is reported with the command to retry."""
    for rung, folder in STAGES[stage].rung_folders(run.finished(stage), run).items():
        try:
            print(describe(export_gguf(folder, outtype, force=True, name=f"{run.recipe.name}-{rung}")))
        except Exception as e:  # the stage is finished and recorded; the export can be retried
            print(f"{stage}: export failed ({e}); retry with `hf-ladder export {folder} --to gguf --outtype {outtype}`")


def run_ladder(recipe: Recipe, force: str | None = None) -> list[StageResult]:
    """Every stage the recipe has a section for, bottom to top; `force` redoes that stage and those above.

    Raises:
        RecipeError: `force` is not a stage of this ladder.
    """
    stages = [s for s in STAGE_NAMES if s in recipe.stages]
    if force is not None and force not in stages:
        raise RecipeError(f"--force {force}: not a stage of this ladder ({', '.join(stages)})")
    results = []
    for stage in stages:
        redo = force is not None and STAGE_NAMES.index(stage) >= STAGE_NAMES.index(force)
        result = run_stage(stage, recipe, force=redo)
        results.append(result)
        if result.status != "finished":
            print(f"ladder stops after {stage}: {result.status} ({result.reason})")
            break
    return results
