"""The run directory: one folder per recipe, one sub-folder per stage, and a manifest of the lineage.

    runs/<recipe>/
      manifest.json            every finished stage: status, inputs, metrics, versions, seed, git sha, wall time
      <stage>/
        model/                 safetensors + config + tokenizer + generation_config (plain from_pretrained)
        checkpoints/           Trainer checkpoints while the stage runs (a rerun resumes from the last)
        tokenizer/             pretrain's trained tokenizer, kept so a resumed run uses the same one
        alerts.json            the sample monitor's memorization and overfitting alerts
        metrics.json           flat name -> number
        samples.jsonl          step, prompt, decoding, text, coherence, loss
        log_history.json       the Trainer's log history
        loss.png               train / validation loss
        recipe.resolved.yaml   the recipe with every default filled in

Every file here is written atomically (a temporary file, then `os.replace`), so an interrupted run never
leaves a half-written manifest or model behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from hf_ladder.schema import Recipe


class TrainingError(RuntimeError):
    """A stage's training went wrong in a way no result can be recorded for (e.g. a nan loss)."""


@dataclass
class StageResult:
    """What a stage returns and the manifest records."""

    stage: str
    status: str  # "finished", "halted" (auto-halt on coherence) or "stopped" (overfitting, asked for)
    model_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None  # why it halted or stopped
    wall_time_s: float = 0.0
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What a stage gets besides its own recipe section: the recipe, the run directory, the stage below it."""

    recipe: Recipe
    run: Run
    previous: StageResult | None  # the stage below this one on the ladder, if it has run


class Run:
    """The run directory of one recipe."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.root = Path(recipe.run_dir)
        self.manifest_path = self.root / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        """runs/<recipe>/<stage>/"""
        return self.root / stage

    def manifest(self) -> dict[str, Any]:
        """The manifest as a dict (`{"recipe": ..., "stages": {stage: entry}}`), empty before any stage ran."""
        if not self.manifest_path.exists():
            return {"recipe": self.recipe.name, "stages": {}}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def finished(self, stage: str) -> StageResult | None:
        """The recorded result of `stage`, if the manifest says it ended (finished, halted or stopped)."""
        entry = self.manifest()["stages"].get(stage)
        if entry is None:
            return None
        names = {f.name for f in dataclasses.fields(StageResult)}
        result = StageResult(**{k: v for k, v in entry.items() if k in names})
        result.model_dir = str(self.root / result.model_dir)  # recorded relative: run folders can move
        return result

    def record(self, result: StageResult) -> None:
        """Add a stage's result to the manifest with the environment it ran in."""
        manifest = self.manifest()
        manifest["recipe"] = self.recipe.name
        manifest["recipe_source"] = self.recipe.source
        entry = dataclasses.asdict(result)
        entry["model_dir"] = os.path.relpath(result.model_dir, self.root)
        manifest["stages"][result.stage] = {
            **entry, "seed": self.recipe.seed,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **environment()}
        write_json(self.manifest_path, manifest)

    def drop(self, stages) -> None:
        """Forget `stages` in the manifest (they are redone)."""
        manifest = self.manifest()
        for name in stages:
            manifest["stages"].pop(name, None)
        if self.manifest_path.exists():
            write_json(self.manifest_path, manifest)


# ---------------------------------------------------------------------------------------------- writing


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when the file does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def loss_curves(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """The Trainer's log history as {"train": [(step, loss)], "eval": [(step, eval_loss)]}."""
    return {"train": [(h["step"], h["loss"]) for h in log_history if "loss" in h],
            "eval": [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]}


def read_jsonl(path: Path) -> list[dict]:
    """One dict per non-empty line of `path`; [] when it does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_json(path: Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_yaml(path: Path, obj: Any) -> None:
    """Write `obj` as YAML (keys in their order), atomically."""
    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def save_model(model, tokenizer, dest: Path) -> None:
    """Save a model (safetensors; a peft model: its adapter) and its tokenizer (None: the model only) to `dest`
    atomically: into a temporary folder, then swapped in; the old folder stays whole until then."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ provenance

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "accelerate", "trl", "peft", "bitsandbytes")


def environment() -> dict[str, Any]:
    """Versions of the stack, the Python, and the git commit of the hf_ladder source (None outside git)."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"versions": versions, "git_sha": git_sha()}


def git_sha() -> str | None:
    """The commit of the hf_ladder source, with `-dirty` when tracked files changed; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None
