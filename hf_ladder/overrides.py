"""`key=value` overrides on the command line: dotted keys into the recipe's nested mapping, values read as YAML.

    pretrain.max_steps=40   run_dir=/tmp/run   monitor.prompts=["ROMEO:\\n"]   eval.baseline=null
"""

from __future__ import annotations

import yaml

from hf_ladder.schema import RecipeError


def is_override(item: str) -> bool:
    """Whether a command-line word is a `key=value` override (rather than a file or an option)."""
    key, sep, _ = item.partition("=")
    return bool(sep and key.strip()) and not key.startswith("-")


def apply_override(raw: dict, item: str, where: str = "override") -> None:
    """Set `a.b.c=value` in the nested dict `raw`; the value is parsed as YAML (`40`, `true`, `[a, b]`), and kept
    as the string it is when it is not valid YAML.

    Raises:
        RecipeError: `item` has no `=` or an empty key.
    """
    if not is_override(item):
        raise RecipeError(f"{where}: override {item!r} is not of the form key=value (e.g. pretrain.max_steps=40)")
    key, _, value = item.partition("=")
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = value
