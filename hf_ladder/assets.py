"""The files that travel inside the package: the built-in recipes, the side-by-side prompt sets and the published
reference numbers.

Their sources are the repository's top-level `recipes/` and `eval/` folders; the package links them in
(`hf_ladder/recipes`, `hf_ladder/eval/prompts`, `hf_ladder/eval/reference`), so the wheel carries copies and an
editable install reads the sources themselves, both through `importlib.resources`. Built-in recipes are addressed
by name, as torchtune's `tune ls` / `tune cp`: `shakespeare-tiny`, `accelerate/ddp`.
"""

from __future__ import annotations

import difflib
import importlib.resources
from pathlib import Path

from hf_ladder.schema import RecipeError


def _package_dir(*parts: str) -> Path:
    return Path(str(importlib.resources.files("hf_ladder").joinpath(*parts)))


def recipes_dir() -> Path:
    """The built-in recipes (the repository's recipes/)."""
    return _package_dir("recipes")


def prompts_dir() -> Path:
    """The built-in side-by-side prompt sets (the repository's eval/prompts/)."""
    return _package_dir("eval", "prompts")


def reference_file(name: str = "gpt2-small.yaml") -> Path:
    """A file of published reference numbers (the repository's eval/reference/)."""
    return _package_dir("eval", "reference", name)


def builtin_recipes() -> dict[str, Path]:
    """Name -> file of every built-in recipe, ladders first, then the accelerate configs (`accelerate/ddp`)."""
    root = recipes_dir()
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("*/*.yaml"))
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in files}


def describe(path: Path) -> str:
    """The first comment line of a recipe file: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def builtin_recipe(name: str) -> Path:
    """The file of a built-in recipe by name (`shakespeare-tiny`, `shakespeare-tiny.yaml`, `accelerate/ddp`).

    Raises:
        RecipeError: no built-in recipe has that name (the message lists them, with the closest one).
    """
    known = builtin_recipes()
    key = name[:-5] if name.endswith(".yaml") else name
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        raise RecipeError(f"{name}: no such recipe file, and no built-in recipe of that name"
                          + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (built-in: {', '.join(known)}; `hf-ladder recipes` lists them)")
    return known[key]
