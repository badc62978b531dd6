"""Plots written next to each stage's metrics (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(log_history: list[dict], path: Path, title: str, alerts: list[dict] = (),
                halted_step: int | None = None) -> None:
    """Train and validation loss (nats/token) against optimizer step; overfitting alerts and an auto-halt
    are marked with vertical lines."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="tab:orange")
    for i, a in enumerate(x for x in alerts if x["type"] == "overfitting"):
        ax.axvline(a["step"], color="tab:red", ls="--", label="overfitting alert" if i == 0 else None)
    if halted_step is not None:
        ax.axvline(halted_step, color="black", ls=":", label="auto-halt")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Save `fig` to `path` atomically (a temporary file, then renamed) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)
