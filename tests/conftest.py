"""Shared fixtures. Every test runs offline (HF_HUB_OFFLINE=1) on ../shared/data or on models it builds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HF_LADDER_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"
DEFAULT_RECIPE = ROOT / "recipes" / "shakespeare-tiny.yaml"

# A tiny model and a short run: enough to watch real learning on real text in seconds.
TINY = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.n_positions=64", "data.block_size=64",
        "pretrain.per_device_train_batch_size=16", "pretrain.bf16=false", "pretrain.logging_steps=10",
        "monitor.generation.max_new_tokens=40"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"the shared datasets are expected at {DATA} (set HF_LADDER_SHARED)")
    return DATA


def tiny_recipe(run_dir, *overrides, recipe=DEFAULT_RECIPE):
    """The default recipe shrunk to a tiny model, writing into `run_dir`, with extra `key=value` overrides."""
    from hf_ladder.recipe import load_recipe

    return load_recipe(recipe, [*TINY, f"run_dir={run_dir}", *overrides])
