"""The ladder through the manifest: a rerun skips what finished; `--force STAGE` redoes that stage and every one
above it, `run STAGE --force` redoes that stage (and forgets the ones above), `--force eval` only the eval."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_RECIPE, TINY

from hf_ladder import cli

# Three stages of the default ladder, small: pretrain, a LoRA on it, its int8 variant; the eval on held-out text.
SHORT = [*TINY, "pretrain.max_steps=20", "monitor.sample_every=10", "lora.max_steps=6", "lora.bf16=false",
         "monitor.generation.max_new_tokens=8", "quantize.variants={int8: {load_in_8bit: true}}",
         "eval.tasks=[heldout]", "eval.baselines=[]", "eval.generation.max_new_tokens=8"]


@pytest.fixture()
def ladder(tmp_path, capsys):
    """(run `hf-ladder ladder` with extra arguments -> its stdout, the run directory) on a three-stage recipe."""
    raw = yaml.safe_load(DEFAULT_RECIPE.read_text())
    recipe = tmp_path / "three.yaml"
    recipe.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in ("sft", "dpo")}))
    run_dir = tmp_path / "run"

    def run(*extra: str, command: str = "ladder", stage: str | None = None) -> str:
        argv = [command, *([stage] if stage else []), str(recipe), *SHORT, f"run_dir={run_dir}", *extra]
        assert cli.main(argv) == 0, argv
        return capsys.readouterr().out

    return run, run_dir


def stamps(run_dir: Path) -> dict[str, str]:
    """Each stage's finished_at and wall time in the manifest: a redone stage gets new ones."""
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    return {name: (entry["finished_at"], entry["wall_time_s"]) for name, entry in stages.items()}


def kept(out: str) -> list[str]:
    """The rungs whose scores the eval kept from the last one (unchanged since), in order."""
    return [line.split(":")[0] for line in out.splitlines() if line.endswith("(unchanged since the last eval: kept)")]


def ran(out: str) -> list[str]:
    """The stages a command ran (their ==== headers), in order."""
    return [line.split()[1] for line in out.splitlines() if line.startswith("==== ") and "· recipe" in line]


def test_force_redoes_a_stage_and_those_above_it(ladder):
    run, run_dir = ladder
    assert ran(run()) == ["pretrain", "lora", "quantize", "eval"]
    first, results = stamps(run_dir), (run_dir / "eval" / "results.json").stat().st_mtime_ns

    out = run()  # nothing to do: every stage and the eval are recorded
    assert ran(out) == [] and stamps(run_dir) == first and "eval: already in" in out

    out = run("--force", "lora")  # lora and everything above it; pretrain stays
    assert ran(out) == ["lora", "quantize", "eval"] and "pretrain: already finished" in out
    second = stamps(run_dir)
    assert second["pretrain"] == first["pretrain"]
    assert second["lora"] != first["lora"] and second["quantize"] != first["quantize"]
    assert (run_dir / "eval" / "results.json").stat().st_mtime_ns > results
    assert kept(out) == ["pretrain"]  # the eval scored only the rungs that changed

    out = run("--force", command="run", stage="pretrain")  # one stage, redone; the ones above are forgotten
    assert ran(out) == ["pretrain"]
    assert set(stamps(run_dir)) == {"pretrain"} and stamps(run_dir)["pretrain"] != first["pretrain"]
    assert ran(run()) == ["lora", "quantize", "eval"]  # the next ladder rebuilds them, and evaluates them again

    results = (run_dir / "eval" / "results.json").stat().st_mtime_ns
    before = stamps(run_dir)
    out = run("--force", "eval")  # only the eval
    assert ran(out) == ["eval"] and stamps(run_dir) == before
    assert (run_dir / "eval" / "results.json").stat().st_mtime_ns > results
    assert kept(out) == []  # --force eval scores every rung again
