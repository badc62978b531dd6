"""Every figure hf_ladder draws (matplotlib, no display needed): a stage's loss curve, the report's loss panels,
its ladder chart and its Chinchilla map. Figures take plain numbers; what to draw is the caller's (the stage,
`hf_ladder.eval.report`). Each is written atomically."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hf_ladder.runs import loss_curves  # noqa: E402

ALERT_STYLES = {"overfitting": ("tab:red", "--"), "memorization": ("tab:purple", ":")}


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Save `fig` to `path` atomically (a temporary file, then renamed) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def draw_losses(ax, log_history: list[dict], alerts: list[dict], title: str, halted_step: int | None = None) -> None:
    """Train and validation loss (nats/token) against optimizer step on `ax`; the monitor's overfitting and
    memorization alerts, and an auto-halt, as vertical lines at their steps."""
    curves = loss_curves(log_history)
    train, val = curves["train"], curves["eval"]
    if train:
        ax.plot(*zip(*train), color="tab:blue", label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", label="validation loss")
    for kind, (color, ls) in ALERT_STYLES.items():
        for i, alert in enumerate(a for a in alerts if a.get("type") == kind and "step" in a):
            ax.axvline(alert["step"], color=color, ls=ls, lw=1.5, label=f"{kind} alert" if i == 0 else None)
    if halted_step is not None:
        ax.axvline(halted_step, color="black", ls=":", label="auto-halt")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_losses(log_history: list[dict], path: Path, title: str, alerts: list[dict] = (),
                halted_step: int | None = None) -> None:
    """One stage's loss curve (its loss.png)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    draw_losses(ax, log_history, list(alerts), title, halted_step)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_stage_losses(stages: dict[str, tuple[list[dict], list[dict], str]], path: Path) -> bool:
    """One panel per stage {name: (log history, alerts, status)} that logged a loss. Returns False (and writes
    nothing) when none did."""
    trained = {name: s for name, s in stages.items() if any("loss" in h or "eval_loss" in h for h in s[0])}
    if not trained:
        return False
    cols = min(len(trained), 2)
    rows = math.ceil(len(trained) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, (history, alerts, status)) in zip(axes.flat, trained.items()):
        draw_losses(ax, history, alerts, f"{name} ({status})")
    for ax in axes.flat[len(trained):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    return True


@dataclass
class Panel:
    """One metric across the rungs: a point per rung (None: not measured), a line per baseline, chance."""

    title: str
    points: list[tuple[str, float | None, float | None]]  # (rung, value, stderr), in the units to draw
    lower_is_better: bool
    log_scale: bool = False
    baselines: list[tuple[float, str, bool]] = field(default_factory=list)  # (value, label, measured) each
    chance: float | None = None


def plot_ladder(panels: list[Panel], path: Path) -> None:
    """The ladder chart: one panel per metric, a point per rung with ±1 stderr, each baseline as a horizontal
    line (solid when measured, dashed grey when it is a published number) and chance as a dotted line."""
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        draw_panel(ax, panel)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def draw_panel(ax, panel: Panel) -> None:
    """One metric's panel of `plot_ladder`; a rung without the number gets "n/a" at the bottom."""
    for x, (_, value, stderr) in enumerate(panel.points):
        if value is None:
            ax.text(x, 0.03, "n/a", ha="center", transform=ax.get_xaxis_transform(), color="gray", fontsize=9)
        else:
            ax.errorbar(x, value, yerr=stderr, fmt="o", ms=7, color="tab:blue", capsize=4)
    for (value, label, measured), color in zip(panel.baselines, ("tab:green", "tab:purple", "tab:orange", "tab:red")):
        ax.axhline(value, color=color if measured else "tab:gray", ls="-" if measured else "--", lw=2, label=label)
    if panel.chance is not None:
        ax.axhline(panel.chance, color="black", ls=":", lw=1, label="chance")
    if panel.log_scale:
        ax.set_yscale("log")
    ax.set_title(f"{panel.title}\n({'lower' if panel.lower_is_better else 'higher'} is better)", fontsize=10)
    names = [rung for rung, _, _ in panel.points]
    ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_chinchilla(models: list[dict], tokens_per_parameter: float, this_run: tuple[float, float, str] | None,
                    path: Path) -> None:
    """Parameters against training tokens on log-log axes: the tokens-per-parameter line, the reference `models`
    ({name, parameters, tokens, tokens_is_estimate}: hollow where the tokens are an estimate) and this run
    (parameters, tokens, label) as a red star."""
    xs = [m["parameters"] for m in models] + ([this_run[0]] if this_run else [])
    n = np.logspace(math.log10(min(xs)) - 0.7, math.log10(max(xs)) + 0.7, 50)
    fig, ax = plt.subplots(figsize=(8.5, 6))
    ax.plot(n, tokens_per_parameter * n, "--", color="gray",
            label=f"{tokens_per_parameter} tokens / parameter (Chinchilla compute-optimal)")
    for m in models:
        hollow = m.get("tokens_is_estimate", False)
        ax.scatter(m["parameters"], m["tokens"], s=45, color="tab:blue", facecolors="white" if hollow else None)
        ax.annotate(m["name"], (m["parameters"], m["tokens"]), xytext=(0, 6), textcoords="offset points",
                    ha="center", fontsize=8)
    if this_run:
        ax.scatter(this_run[0], this_run[1], marker="*", s=300, color="tab:red", zorder=3, label=this_run[2])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 10)  # room for the top label
    ax.set_xlabel("parameters")
    ax.set_ylabel("training tokens")
    ax.set_title("Chinchilla map (hollow: training tokens not published, estimated)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
