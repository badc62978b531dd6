"""The ladder report: every rung of a run side by side with GPT-2 small, written to runs/<recipe>/report/.

    report/
      index.html        the report; the images by relative path
      report.md         the same sections and tables, with the same images
      losses.png        train / validation loss of every trained stage, alerts marked at their steps
      ladder.png        each main benchmark per rung, the baseline as a line (measured, else published)
      chinchilla.png    this run's parameters and tokens on the Chinchilla map (20 tokens per parameter)

It reads what the stages and `hf-ladder eval` wrote. Only the manifest is required; a missing file, rung, task or
metric shows as "—":

    manifest.json               the stages that ran: every one gets a row
    <stage>/log_history.json    the Trainer's log history (`loss` and `eval_loss` entries with their `step`)
    <stage>/alerts.json         the sample monitor's memorization and overfitting alerts (`type`, `step`)
    <stage>/metrics.json        flat name -> number (quantize: `<variant>_perplexity`, `<variant>_linear_bytes`, ...)
    eval/results.json           {rung: {task: {metric: value}}}, accuracies as fractions, `<metric>_stderr` beside
    eval/rungs.json             {rung: {kind, model_dir, parameters, tokens_seen, measured, note}}
    eval/samples.jsonl          one {rung, prompt, text, coherence, prompt_set} per line

and the published GPT-2 small numbers, with their sources, in eval/reference/gpt2-small.yaml at the top of the
repository. The report is a list of blocks (headings, paragraphs, tables, images) rendered twice, as Markdown
and as HTML, so the two always hold the same tables.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import matplotlib
import numpy as np
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hf_ladder.plots import save_figure  # noqa: E402
from hf_ladder.recipe import STAGE_ORDER  # noqa: E402
from hf_ladder.runs import read_json, read_jsonl, write_text  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2] / "eval" / "reference" / "gpt2-small.yaml"
BASELINE = "gpt2"  # the baseline's rung when eval/rungs.json names none of kind "baseline"
MISSING = "—"

# The benchmark table: (task, metric, column title, format); "%" prints a fraction as a percentage.
COLUMNS = [
    ("heldout", "bits_per_byte", "held-out bits/byte", ".3f"),
    ("heldout", "token_perplexity", "held-out token ppl", ".1f"),
    ("wikitext", "bits_per_byte", "WikiText bits/byte", ".3f"),
    ("wikitext", "word_perplexity", "WikiText word ppl", ".2f"),
    ("hellaswag", "acc", "HellaSwag acc %", "%"),
    ("hellaswag", "acc_norm", "HellaSwag acc_norm %", "%"),
    ("lambada_openai", "acc", "LAMBADA acc %", "%"),
    ("lambada_openai", "perplexity", "LAMBADA ppl", ".2f"),
    ("mmlu", "acc", "MMLU 0-shot %", "%"),
    ("mmlu_5shot", "acc", "MMLU 5-shot %", "%"),
    ("samples", "coherence_mean", "coherence", ".1f"),
]

# The ladder chart: (task, metric, panel title, lower is better, log scale).
CHARTS = [
    ("heldout", "bits_per_byte", "held-out plays: bits / byte", True, False),
    ("wikitext", "bits_per_byte", "WikiText-2: bits / byte", True, False),
    ("wikitext", "word_perplexity", "WikiText-2: word perplexity", True, True),
    ("lambada_openai", "perplexity", "LAMBADA: perplexity", True, True),
    ("hellaswag", "acc_norm", "HellaSwag: acc_norm (%)", False, False),
    ("lambada_openai", "acc", "LAMBADA: acc (%)", False, False),
    ("mmlu", "acc", "MMLU 0-shot: acc (%)", False, False),
    ("mmlu_5shot", "acc", "MMLU 5-shot: acc (%)", False, False),
]


def write_report(run_dir: Path, out_dir: Path | None = None, reference: Path = REFERENCE) -> Path:
    """Write the ladder report of `run_dir` and return the path of its index.html.

    Args:
        run_dir: runs/<recipe>/ (see the module docstring for the files read).
        out_dir: where to write index.html, report.md and the PNGs; default `run_dir / "report"`.
        reference: the published GPT-2 small numbers (eval/reference/gpt2-small.yaml).
    Every file is written atomically (a temporary file, then os.replace); index.html is written last.
    Raises FileNotFoundError when `run_dir` has no manifest.json or `reference` does not exist.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    ref = yaml.safe_load(Path(reference).read_text(encoding="utf-8"))
    blocks = build_blocks(run, ref, out_dir)
    title = f"{run['recipe']}: the ladder report"
    write_text(out_dir / "report.md", render_markdown(title, blocks))
    write_text(out_dir / "index.html", render_html(title, blocks))
    return out_dir / "index.html"


# ---------------------------------------------------------------------------------------------- reading


def load_run(run_dir: Path) -> dict:
    """Everything the report shows, as plain dicts: the manifest's stages (in ladder order) with their logs,
    the eval outputs and the baseline's rung name. Raises FileNotFoundError without a manifest."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: is {run_dir} a run directory (runs/<recipe>/)?")
    manifest = read_json(manifest_path)
    names = sorted(manifest["stages"], key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER))
    stages = {}
    for name in names:
        entry = manifest["stages"][name]
        stages[name] = {"entry": entry,
                        "metrics": read_json(run_dir / name / "metrics.json", entry.get("metrics", {})),
                        "history": read_json(run_dir / name / "log_history.json", []),
                        "alerts": read_json(run_dir / name / "alerts.json", [])}
    rungs = read_json(run_dir / "eval" / "rungs.json", {})
    return {"recipe": manifest.get("recipe", run_dir.name), "stages": stages,
            "results": read_json(run_dir / "eval" / "results.json", {}), "rungs": rungs,
            "baseline": next((r for r, info in rungs.items() if info.get("kind") == "baseline"), BASELINE),
            "samples": read_jsonl(run_dir / "eval" / "samples.jsonl")}


def rung_order(run: dict) -> list[str]:
    """The rungs in ladder order: each manifest stage (or its variants, `quantize/int8`, ...; the stage's own name
    when eval has nothing for it), then any other evaluated rung, then the baseline."""
    known = [*run["rungs"], *(r for r in run["results"] if r not in run["rungs"])]
    order = []
    for stage in run["stages"]:
        order += [r for r in known if r == stage or r.startswith(stage + "/")] or [stage]
    order += [r for r in known if r not in order and r != run["baseline"]]
    if run["baseline"] in known:
        order.append(run["baseline"])
    return order


def baseline_measured(run: dict) -> tuple[bool, str]:
    """(whether the baseline was measured, why not)."""
    info = run["rungs"].get(run["baseline"], {})
    if run["baseline"] in run["results"] and info.get("measured", True):
        return True, ""
    if info.get("note"):
        return False, info["note"]
    if not run["results"]:
        return False, "there are no eval results yet (run `hf-ladder eval`)"
    return False, f"eval/results.json has no `{run['baseline']}` rung"


def score(run: dict, rung: str, task: str, metric: str) -> tuple[float | None, float | None]:
    """(value, stderr) of one metric of one rung; None where missing."""
    scores = run["results"].get(rung, {}).get(task, {})
    return scores.get(metric), scores.get(f"{metric}_stderr")


def finite(x) -> float | None:
    """`x` if it is a finite number, else None (a NaN or infinite perplexity is not drawn)."""
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def published(ref: dict, task: str, metric: str) -> dict | None:
    """The harness-comparable published GPT-2 small entry for (task, metric), if there is one."""
    return next((p for p in ref["published"]
                 if p["task"] == task and p["metric"] == metric and p["harness_comparable"]), None)


def run_size(run: dict) -> tuple[float | None, float | None]:
    """(parameters, pretraining tokens) of this run: eval/rungs.json's pretrain rung, else pretrain's metrics."""
    rung = run["rungs"].get("pretrain", {})
    metrics = run["stages"].get("pretrain", {}).get("metrics", {})
    return (rung.get("parameters") or metrics.get("parameters"),
            rung.get("tokens_seen") or metrics.get("tokens_seen"))


# ---------------------------------------------------------------------------------------------- formatting


def number(value: float | None, fmt: str) -> str:
    """`value` in `fmt` ("%" = a fraction as a percentage), or "—"."""
    if value is None:
        return MISSING
    return f"{100 * value:.2f}" if fmt == "%" else format(value, fmt)


def with_stderr(value: float | None, stderr: float | None, fmt: str) -> str:
    """"31.14 ± 0.46", or the value alone without a stderr."""
    if value is None or stderr is None:
        return number(value, fmt)
    return f"{number(value, fmt)} ± {number(stderr, fmt)}"


def count(n: float | None) -> str:
    """1071872 -> "1.07M", 1.4e12 -> "1.4T"."""
    if n is None:
        return MISSING
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def megabytes(n: float | None) -> str:
    """3164160 -> "3.16 MB"."""
    return MISSING if n is None else f"{n / 1e6:.2f} MB"


# ---------------------------------------------------------------------------------------------- plots


def plot_losses(stages: dict, path: Path) -> bool:
    """One panel per stage with a log history: train loss, validation loss, and the monitor's alerts as vertical
    lines at their steps. Returns False (and writes nothing) when no stage logged a loss."""
    trained = {name: s for name, s in stages.items() if any("loss" in h or "eval_loss" in h for h in s["history"])}
    if not trained:
        return False
    cols = min(len(trained), 2)
    rows = math.ceil(len(trained) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.8 * rows), squeeze=False)
    for ax, (name, stage) in zip(axes.flat, trained.items()):
        draw_losses(ax, name, stage)
    for ax in axes.flat[len(trained):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def draw_losses(ax, name: str, stage: dict) -> None:
    """One stage's panel of `plot_losses`."""
    train = [(h["step"], h["loss"]) for h in stage["history"] if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in stage["history"] if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), color="tab:blue", label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", color="tab:orange", label="validation loss")
    styles = {"overfitting": ("tab:red", "--"), "memorization": ("tab:purple", ":")}
    for kind, (color, ls) in styles.items():
        for i, alert in enumerate(a for a in stage["alerts"] if a.get("type") == kind and "step" in a):
            ax.axvline(alert["step"], color=color, ls=ls, lw=1.5, label=f"{kind} alert" if i == 0 else None)
    ax.set_title(f"{name} ({stage['entry'].get('status', '?')})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_ladder(run: dict, order: list[str], ref: dict, measured: bool, path: Path) -> bool:
    """One panel per main benchmark (CHARTS) that some rung has: a point per rung with ±1 stderr, the baseline as
    a horizontal line (solid when measured, else GPT-2 small's published number, dashed and labelled "published,
    not measured") and chance as a dotted line. Returns False (and writes nothing) when no rung has any of them."""
    rungs = [r for r in order if r != run["baseline"]]
    charts = [c for c in CHARTS if any(finite(score(run, r, c[0], c[1])[0]) is not None for r in rungs)]
    if not charts:
        return False
    cols = min(len(charts), 4)
    rows = math.ceil(len(charts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for ax, chart in zip(axes.flat, charts):
        draw_rungs(ax, run, rungs, chart, ref, measured)
    for ax in axes.flat[len(charts):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def draw_rungs(ax, run: dict, rungs: list[str], chart: tuple, ref: dict, measured: bool) -> None:
    """One benchmark's panel of `plot_ladder`; a rung without the number gets "n/a" at the bottom."""
    task, metric, title, lower_better, log = chart
    scale = 100 if metric.startswith("acc") else 1
    for x, rung in enumerate(rungs):
        value, stderr = map(finite, score(run, rung, task, metric))
        if value is None:
            ax.text(x, 0.03, "n/a", ha="center", transform=ax.get_xaxis_transform(), color="gray", fontsize=9)
            continue
        ax.errorbar(x, value * scale, yerr=None if stderr is None else stderr * scale, fmt="o", ms=7,
                    color="tab:blue", capsize=4)
    base = finite(score(run, run["baseline"], task, metric)[0]) if measured else None
    entry = published(ref, task, metric)
    if base is not None:
        ax.axhline(base * scale, color="tab:green", lw=2, label=f"{run['baseline']} (measured)")
    elif entry is not None:
        ax.axhline(entry["value"] * scale, color="tab:gray", ls="--", lw=2,
                   label=f"{ref['name']}: published,\nnot measured")
    if task in ref.get("chance", {}) and metric.startswith("acc"):
        ax.axhline(ref["chance"][task] * scale, color="black", ls=":", lw=1, label="chance")
    if log:
        ax.set_yscale("log")
    ax.set_title(f"{title}\n({'lower' if lower_better else 'higher'} is better)", fontsize=10)
    ax.set_xticks(range(len(rungs)), rungs, rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(rungs) - 0.4)
    ax.grid(alpha=0.3, axis="y")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_chinchilla(run: dict, ref: dict, path: Path) -> None:
    """Parameters against training tokens on log-log axes: the tokens-per-parameter line, the reference models
    (hollow where their tokens are an estimate) and this run as a red star (when its size is known)."""
    chin = ref["chinchilla"]
    params, tokens = run_size(run)
    models = chin["models"]
    xs = [m["parameters"] for m in models] + ([params] if params else [])
    n = np.logspace(math.log10(min(xs)) - 0.7, math.log10(max(xs)) + 0.7, 50)
    fig, ax = plt.subplots(figsize=(8.5, 6))
    ax.plot(n, chin["tokens_per_parameter"] * n, "--", color="gray",
            label=f"{chin['tokens_per_parameter']} tokens / parameter (Chinchilla compute-optimal)")
    for m in models:
        hollow = m.get("tokens_is_estimate", False)
        ax.scatter(m["parameters"], m["tokens"], s=45, color="tab:blue", facecolors="white" if hollow else None)
        ax.annotate(m["name"], (m["parameters"], m["tokens"]), xytext=(0, 6), textcoords="offset points",
                    ha="center", fontsize=8)
    if params and tokens:
        ax.scatter(params, tokens, marker="*", s=300, color="tab:red", zorder=3,
                   label=f"this run ({run['recipe']}): {count(params)} parameters, {count(tokens)} tokens, "
                         f"{tokens / params:.1f} tokens / parameter")
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


# ---------------------------------------------------------------------------------------------- sections
# A block is ("h2", text) | ("p", text) | ("banner", text) | ("img", file, alt)
#            | ("table", name, header, rows, keys): `keys` name the rows (data-key in the HTML).


def build_blocks(run: dict, ref: dict, out_dir: Path) -> list[tuple]:
    """The report's sections, top to bottom; writes the PNGs into `out_dir` on the way."""
    order = rung_order(run)
    measured, why = baseline_measured(run)
    blocks = [("p", f"Stages in the manifest: {', '.join(run['stages']) or 'none'}. "
                    f"Rungs: {', '.join(order)}.")]
    if not measured:
        blocks.append(("banner", f"Baseline {run['baseline']} not measured: {why}. Every {ref['name']} number in "
                                 "this report is published, not measured; each one's source is in the reference "
                                 "table below."))
    blocks += stage_section(run, out_dir)
    blocks += benchmark_section(run, order, ref, measured, out_dir)
    blocks += reference_section(ref)
    blocks += quantization_section(run)
    blocks += chinchilla_section(run, ref, out_dir)
    blocks += samples_section(run, order)
    return blocks


def stage_section(run: dict, out_dir: Path) -> list[tuple]:
    """A row per manifest stage, the loss curves (losses.png) and every alert in words."""
    header = ["stage", "status", "steps", "last train loss", "last val loss", "alerts", "wall time", "note"]
    rows = []
    for name, stage in run["stages"].items():
        train = [h["loss"] for h in stage["history"] if "loss" in h]
        val = [h["eval_loss"] for h in stage["history"] if "eval_loss" in h]
        kinds = [a.get("type", "?") for a in stage["alerts"]]
        alerts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "none"
        wall = stage["entry"].get("wall_time_s")
        rows.append([name, stage["entry"].get("status", "?"), number(stage["metrics"].get("global_step"), ".0f"),
                     number(train[-1] if train else None, ".3f"), number(val[-1] if val else None, ".3f"),
                     alerts, MISSING if wall is None else f"{wall:.0f} s", stage["entry"].get("reason") or ""])
    blocks = [("h2", "Stages"), ("table", "stages", header, rows, list(run["stages"]))]
    if plot_losses(run["stages"], out_dir / "losses.png"):
        blocks.append(("img", "losses.png", "train and validation loss per stage, alerts marked"))
    blocks += [("p", f"{stage}: {a.get('type', '?')} alert at step {a.get('step', '?')}: "
                     f"{a.get('message') or a.get('train_span') or ''}")
               for stage, s in run["stages"].items() for a in s["alerts"]]
    return blocks


def benchmark_section(run: dict, order: list[str], ref: dict, measured: bool, out_dir: Path) -> list[tuple]:
    """A row per rung (± stderr), a row of published GPT-2 small numbers, and the ladder chart (ladder.png)."""
    header = ["rung", "kind", *(c[2] for c in COLUMNS), "note"]
    rows = []
    for rung in order:
        info = run["rungs"].get(rung, {})
        note = info.get("note") or ("" if rung in run["results"] else "not evaluated")
        rows.append([rung, info.get("kind") or MISSING,
                     *(with_stderr(*score(run, rung, task, metric), fmt) for task, metric, _, fmt in COLUMNS), note])
    rows.append([f"{ref['name']} (published, not measured)", "published",
                 *(number((published(ref, task, metric) or {}).get("value"), fmt) for task, metric, _, fmt in COLUMNS),
                 "harness-comparable published numbers; sources below"])
    sizes = {task: max((s.get(task, {}).get("n", 0) for s in run["results"].values()), default=0)
             for task in dict.fromkeys(c[0] for c in COLUMNS)}
    blocks = [("h2", "Benchmarks"),
              ("p", "Accuracies in %, ± one standard error. Perplexities and bits per byte: lower is better."),
              ("table", "benchmarks", header, rows, [*order, "published"])]
    if any(sizes.values()):
        blocks.append(("p", "Items per task: " + ", ".join(f"{t} {n}" for t, n in sizes.items() if n) + "."))
    if plot_ladder(run, order, ref, measured, out_dir / "ladder.png"):
        blocks.append(("img", "ladder.png", "each benchmark per rung, the baseline as a line"))
    else:
        blocks.append(("p", "No benchmark results to chart (eval/results.json is missing or empty)."))
    return blocks


def reference_section(ref: dict) -> list[tuple]:
    """Every published GPT-2 small number with its setting, source and whether it is harness-comparable."""
    header = ["task", "metric", ref["name"], "setting", "source", "kind of source", "harness-comparable"]
    rows = [[p["task"], p["metric"], number(p["value"], "%" if p["metric"].startswith("acc") else ".2f"),
             p["setting"], p["source"] + (f" ({p['caveat']})" if p.get("caveat") else ""), p["source_kind"],
             "yes" if p["harness_comparable"] else "no"] for p in ref["published"]]
    return [("h2", f"{ref['name']}: published numbers (not measured here)"),
            ("p", f"{ref['name']} ({ref['model']}): {count(ref['parameters'])} parameters ({ref['parameters_source']})."
                  f" Training tokens: ~{count(ref['training_tokens'])}, {ref['training_tokens_source']}"),
            ("p", "The harness-comparable numbers are drawn as the baseline wherever it was not measured."),
            ("table", "reference", header, rows, [f"{p['task']}/{p['metric']}" for p in ref["published"]])]


def quantization_section(run: dict) -> list[tuple]:
    """Size, speed and perplexity of each quantized variant against fp32; nothing when quantize did not run."""
    metrics = run["stages"].get("quantize", {}).get("metrics", {})
    variants = [k[: -len("_perplexity")] for k in metrics if k.endswith("_perplexity")]
    if not variants:
        return []
    header = ["variant", "linear-layer bytes", "vs fp32", "memory", "disk", "perplexity", "perplexity change",
              "bits/byte", "tokens/s"]
    rows = []
    for v in variants:
        m = {k[len(v) + 1:]: x for k, x in metrics.items() if k.startswith(f"{v}_")}
        change = m.get("perplexity_change")
        rows.append([v, megabytes(m.get("linear_bytes")), number(m.get("linear_bytes_ratio"), "%"),
                     megabytes(m.get("memory_bytes")), megabytes(m.get("disk_bytes")),
                     number(m.get("perplexity"), ".3f"), MISSING if change is None else f"{100 * change:+.3f}%",
                     number(m.get("bits_per_byte"), ".4f"), number(m.get("tokens_per_second"), ".0f")])
    return [("h2", "Quantization cost"),
            ("p", "Measured by the quantize stage on its held-out text; 'vs fp32' is the linear layers' size as a "
                  "percentage of fp32, 'perplexity change' relative to fp32."),
            ("table", "quantization", header, rows, variants)]


def chinchilla_section(run: dict, ref: dict, out_dir: Path) -> list[tuple]:
    """This run's tokens per parameter, the map (chinchilla.png) and the reference models with their sources."""
    chin = ref["chinchilla"]
    ratio = chin["tokens_per_parameter"]
    params, tokens = run_size(run)
    plot_chinchilla(run, ref, out_dir / "chinchilla.png")
    if params and tokens:
        text = (f"This run: {count(params)} parameters, {count(tokens)} pretraining tokens, {tokens / params:.1f} "
                f"tokens per parameter; compute-optimal for its size would be ~{count(ratio * params)} tokens "
                f"({ratio * params / tokens:.1f}x what it saw).")
    else:
        text = "This run's parameters and tokens are unknown (no pretrain rung in eval/rungs.json or pretrain metrics)."
    rows = [[m["name"], count(m["parameters"]), ("~" if m.get("tokens_is_estimate") else "") + count(m["tokens"]),
             f"{m['tokens'] / m['parameters']:.0f}", m["source"], m.get("source_kind", "")] for m in chin["models"]]
    return [("h2", "Chinchilla map"), ("p", text), ("img", "chinchilla.png", "parameters against training tokens"),
            ("p", f"The line: {ratio} tokens per parameter, {chin['source']}."),
            ("table", "chinchilla", ["model", "parameters", "tokens", "tokens / parameter", "source", "kind of source"],
             rows, [m["name"] for m in chin["models"]])]


def samples_section(run: dict, order: list[str]) -> list[tuple]:
    """The side-by-side samples: a row per (prompt set, prompt), a column per rung."""
    samples = run["samples"]
    if not samples:
        return [("h2", "Samples"), ("p", "No side-by-side samples (eval/samples.jsonl is missing).")]
    rungs = [r for r in order if any(s["rung"] == r for s in samples)]
    rungs += [r for r in dict.fromkeys(s["rung"] for s in samples) if r not in rungs]
    prompts = list(dict.fromkeys((s.get("prompt_set", ""), s["prompt"]) for s in samples))
    by_key = {(s.get("prompt_set", ""), s["prompt"], s["rung"]): s for s in samples}
    several_sets = len({p[0] for p in prompts}) > 1
    rows = []
    for prompt_set, prompt in prompts:
        cells = [sample_cell(by_key.get((prompt_set, prompt, r))) for r in rungs]
        rows.append([f"[{prompt_set}] {prompt}" if several_sets else prompt, *cells])
    return [("h2", "Samples side by side"),
            ("p", "The same prompts, generated by every rung with the same decoding; the coherence score (0-100) "
                  "under each sample."),
            ("table", "samples", ["prompt", *rungs], rows, [f"{s}/{p}" for s, p in prompts])]


def sample_cell(sample: dict | None) -> str:
    """A sample's text with its coherence score under it, or "—"."""
    if sample is None:
        return MISSING
    return f"{sample['text']}\n\n[coherence {number(sample.get('coherence'), '.1f')}]"


# ---------------------------------------------------------------------------------------------- rendering


def markdown_text(text: str) -> str:
    """`text` with <, > and & escaped, so that text from files never turns into markup."""
    return html.escape(str(text), quote=False)


def markdown_cell(text: str) -> str:
    """`text` for a Markdown table cell: escaped, `|` escaped, newlines as <br>."""
    return markdown_text(text).replace("|", "\\|").replace("\n", "<br>")


def render_markdown(title: str, blocks: list[tuple]) -> str:
    """The blocks as GitHub-flavoured Markdown (text HTML-escaped; in table cells newlines as <br>)."""
    out = [f"# {title}"]
    for kind, *args in blocks:
        if kind == "h2":
            out.append(f"## {args[0]}")
        elif kind == "p":
            out.append(markdown_text(args[0]))
        elif kind == "banner":
            out.append(f"> **{markdown_text(args[0])}**")
        elif kind == "img":
            out.append(f"![{args[1]}]({args[0]})")
        elif kind == "table":
            _, header, rows, _ = args
            lines = ["| " + " | ".join(markdown_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; white-space: pre-wrap; }
th { background: #f0f0f0; }
table#benchmarks td:not(:last-child) { white-space: nowrap; }
table#samples td { font-family: ui-monospace, monospace; font-size: 0.85em; max-width: 28em; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 0.8em 1em; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def render_html(title: str, blocks: list[tuple]) -> str:
    """The blocks as one self-contained HTML page (every text HTML-escaped; images by relative path)."""
    e = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for kind, *args in blocks:
        if kind == "h2":
            out.append(f"<h2>{e(args[0])}</h2>")
        elif kind == "p":
            out.append(f"<p>{e(args[0])}</p>")
        elif kind == "banner":
            out.append(f"<div class=\"banner\" id=\"baseline-banner\">{e(args[0])}</div>")
        elif kind == "img":
            out.append(f"<figure><img src=\"{e(args[0])}\" alt=\"{e(args[1])}\"></figure>")
        elif kind == "table":
            name, header, rows, keys = args
            head = "".join(f"<th>{e(h)}</th>" for h in header)
            body = "".join(f"<tr data-key=\"{e(key)}\">" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for key, row in zip(keys, rows))
            out.append(f"<table id=\"{e(name)}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "\n".join(out) + "\n</body></html>\n"
