"""The ladder report: every rung of a run side by side with its baseline, written to runs/<recipe>/report/.

    report/
      index.html        the report; the images by relative path
      report.md         the same sections and tables, with the same images
      losses.png        train / validation loss of every trained stage, alerts marked at their steps
      ladder.png        each charted metric per rung, the baseline as a line (measured, else published)
      chinchilla.png    this run's parameters and tokens on the Chinchilla map (20 tokens per parameter)

It reads what the stages and `hf-ladder eval` wrote. Only the manifest is required; a missing file, rung, task or
metric shows as "—":

    manifest.json               the stages that ran: every one gets a row
    <stage>/log_history.json    the Trainer's log history (`loss` and `eval_loss` entries with their `step`)
    <stage>/alerts.json         the sample monitor's memorization and overfitting alerts (`type`, `step`)
    <stage>/metrics.json        flat name -> number (quantize: `<variant>_perplexity`, `<variant>_linear_bytes`, ...)
    eval/results.json           {rung: {task: {metric: value}}}, accuracies as fractions, `<metric>_stderr` beside
    eval/rungs.json             {rung: {kind, model_dir, parameters, tokens_seen, measured, note, label}}
                                kind: stage | variant | baseline | reference (the validation text's own lines)
    eval/samples.jsonl          one {rung, prompt_set, prompt, text, coherence, rep_4, judge_ppl, ...} per line

and the published numbers of the baselines with their sources (the package's eval/reference/*.yaml, one file per
baseline, matched by its `rung`; gpt2-small.yaml also holds the chance lines and the Chinchilla map). Which
metrics the tables and the chart show, with their labels and formats, is `hf_ladder.metrics`; the blocks are
rendered by `hf_ladder.eval.render`.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from hf_ladder import metrics
from hf_ladder.assets import reference_file
from hf_ladder.eval.render import render_html, render_markdown
from hf_ladder.plots import Panel, plot_chinchilla, plot_ladder, plot_stage_losses
from hf_ladder.runs import read_json, read_jsonl, write_text
from hf_ladder.stages import STAGE_NAMES

BASELINE = "gpt2"  # the baseline's rung when eval/rungs.json names none of kind "baseline"
MISSING = "—"
GROUPS = (("Language modelling", "bits per byte and perplexities: lower is better"),
          ("Accuracy", "accuracies in %: higher is better"),
          ("Sample readings", "means over the side-by-side samples (eval/prompts)"))
READING_NOTE = ("Judge perplexity and rep_4 are read together: fluent text has a low judge perplexity, gibberish a "
                "high one, but so does nothing surprise a judge less than a repetition loop (\"region region ...\" "
                "has a low judge perplexity), which rep_4 (the share of repeated 4-grams) catches. Coherence (0-100) "
                "catches collapse, not nonsense. The validation-text row scores the real lines after the same prompts: "
                "the judge's scale for text that is good by construction.")


def write_report(run_dir: Path, out_dir: Path | None = None, reference: Path | None = None) -> Path:
    """Write the ladder report of `run_dir` and return the path of its index.html.

    Args:
        run_dir: runs/<recipe>/ (see the module docstring for the files read).
        out_dir: where to write index.html, report.md and the PNGs; default `run_dir / "report"`.
        reference: the folder of published numbers, one YAML per baseline (default: the package's eval/reference/).
    Every file is written atomically (a temporary file, then os.replace); index.html is written last.
    Raises FileNotFoundError when `run_dir` has no manifest.json or `reference` has no gpt2-small.yaml.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    blocks = build_blocks(run, load_references(Path(reference or reference_file().parent)), out_dir)
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
    names = sorted(manifest["stages"], key=lambda s: STAGE_NAMES.index(s) if s in STAGE_NAMES else len(STAGE_NAMES))
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
            "baselines": [r for r, info in rungs.items() if info.get("kind") == "baseline"] or [BASELINE],
            "samples": read_jsonl(run_dir / "eval" / "samples.jsonl")}


def load_references(folder: Path) -> dict[str, dict]:
    """Baseline rung -> its published numbers, from every *.yaml in `folder` (keyed by each file's `rung`); the
    first is gpt2-small.yaml, which also holds `chance` and `chinchilla`. Raises FileNotFoundError without it."""
    main = folder / "gpt2-small.yaml"
    if not main.is_file():
        raise FileNotFoundError(f"{main} not found")
    files = [main, *sorted(p for p in folder.glob("*.yaml") if p != main)]
    refs = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in files]
    return {ref.get("rung", ref["name"]): ref for ref in refs}


def rung_order(run: dict) -> list[str]:
    """The rungs in ladder order: each manifest stage (or its variants, `quantize/int8`, ...; the stage's own name
    when eval has nothing for it), then any other evaluated rung, then the baselines, then the reference rung."""
    known = [*run["rungs"], *(r for r in run["results"] if r not in run["rungs"])]
    kind = {r: run["rungs"].get(r, {}).get("kind") for r in known}
    order = []
    for stage in run["stages"]:
        order += [r for r in known if r == stage or r.startswith(stage + "/")] or [stage]
    order += [r for r in known if r not in order and r not in run["baselines"] and kind[r] != "reference"]
    order += [r for r in run["baselines"] if r in known]
    return order + [r for r in known if kind[r] == "reference"]


def baseline_measured(run: dict, baseline: str) -> tuple[bool, str]:
    """(whether `baseline` was measured, why not)."""
    info = run["rungs"].get(baseline, {})
    if baseline in run["results"] and info.get("measured", True):
        return True, ""
    if info.get("note"):
        return False, info["note"]
    if not run["results"]:
        return False, "there are no eval results yet (run `hf-ladder eval`)"
    return False, f"eval/results.json has no `{baseline}` rung"


def score(run: dict, rung: str, task: str, metric: str) -> tuple[float | None, float | None]:
    """(value, stderr) of one metric of one rung; None where missing."""
    scores = run["results"].get(rung, {}).get(task, {})
    return scores.get(metric), scores.get(f"{metric}_stderr")


def finite(x) -> float | None:
    """`x` if it is a finite number, else None (a NaN or infinite perplexity is not drawn)."""
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def published(ref: dict, task: str, metric: str) -> dict | None:
    """The harness-comparable published entry of one baseline's reference for (task, metric), if there is one."""
    return next((p for p in ref["published"]
                 if p["task"] == task and p["metric"] == metric and p["harness_comparable"]), None)


def run_size(run: dict) -> tuple[float | None, float | None]:
    """(parameters, pretraining tokens) of this run: eval/rungs.json's pretrain rung, else pretrain's metrics."""
    rung = run["rungs"].get("pretrain", {})
    metrics = run["stages"].get("pretrain", {}).get("metrics", {})
    return (rung.get("parameters") or metrics.get("parameters"),
            rung.get("tokens_seen") or metrics.get("tokens_seen"))


# ---------------------------------------------------------------------------------------------- formatting


def with_stderr(metric: metrics.Metric, value: float | None, stderr: float | None) -> str:
    """"31.1%\n± 0.5%" (the stderr under the value, so columns stay narrow), or the value alone without one."""
    if value is None or stderr is None:
        return metric.format(value, MISSING)
    return f"{metric.format(value)}\n± {metric.format(stderr)}"


def count(n: float | None) -> str:
    """1071872 -> "1.07M", 1.4e12 -> "1.4T"."""
    if n is None:
        return MISSING
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def metric_of(task: str, key: str) -> metrics.Metric:
    """The registry's declaration of a published (task, metric), else a plain 4-significant-digit one."""
    return metrics.find(task, key) or metrics.Metric(task, key, key, ".4g", None)


# ---------------------------------------------------------------------------------------------- sections


def build_blocks(run: dict, refs: dict[str, dict], out_dir: Path) -> list[tuple]:
    """The report's sections, top to bottom; writes the PNGs into `out_dir` on the way. `refs`: baseline rung ->
    its published numbers (`load_references`)."""
    order = rung_order(run)
    blocks = [("p", f"Stages in the manifest: {', '.join(run['stages']) or 'none'}. "
                    f"Rungs: {', '.join(order)}.")]
    for baseline in run["baselines"]:
        info, ref = run["rungs"].get(baseline, {}), refs.get(baseline)
        measured, why = baseline_measured(run, baseline)
        if measured:
            how = "".join([f"; scored in {info['dtype']}" if info.get("dtype") else "",
                           f", {info['max_length']:,} tokens at most per window" if info.get("max_length") else ""])
            blocks.append(("p", f"Baseline {baseline}: {info.get('label') or info.get('model_dir') or baseline}{how}."))
        if not measured:
            blocks.append(("banner", f"Baseline {baseline} not measured: {why}. " + (
                f"Every {ref['name']} number in this report is published, not measured; each one's source is in "
                "its reference table below." if ref else "It has no published numbers here.")))
    blocks += stage_section(run, out_dir)
    blocks += benchmark_section(run, order, refs, out_dir)
    for baseline in run["baselines"]:
        if baseline in refs:
            blocks += reference_section(refs[baseline], baseline_measured(run, baseline)[0])
    blocks += quantization_section(run)
    blocks += chinchilla_section(run, refs[next(iter(refs))], out_dir)
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
        wall, steps = stage["entry"].get("wall_time_s"), stage["metrics"].get("global_step")
        rows.append([name, stage["entry"].get("status", "?"), MISSING if steps is None else f"{steps:.0f}",
                     f"{train[-1]:.3f}" if train else MISSING, f"{val[-1]:.3f}" if val else MISSING,
                     alerts, MISSING if wall is None else f"{wall:.0f} s", stage["entry"].get("reason") or ""])
    blocks = [("h2", "Stages"), ("table", "stages", header, rows, list(run["stages"]))]
    curves = {name: (s["history"], s["alerts"], s["entry"].get("status", "?")) for name, s in run["stages"].items()}
    if plot_stage_losses(curves, out_dir / "losses.png"):
        blocks.append(("img", "losses.png", "train and validation loss per stage, alerts marked"))
    blocks += [("p", f"{stage}: {a.get('type', '?')} alert at step {a.get('step', '?')}: "
                     f"{a.get('message') or a.get('train_span') or ''}")
               for stage, s in run["stages"].items() for a in s["alerts"]]
    return blocks


def benchmark_section(run: dict, order: list[str], refs: dict[str, dict], out_dir: Path) -> list[tuple]:
    """Three tables of the `report` metrics (language modelling, benchmark accuracies, sample readings), a row per
    rung (± stderr), a row of published numbers per baseline that has them, and the ladder chart (ladder.png) of
    every `chart` metric. Split in three, each table fits a 1400-pixel page."""
    columns = metrics.shown("report")
    groups = [[m for m in columns if m.source != "samples" and not m.percent],
              [m for m in columns if m.percent], [m for m in columns if m.source == "samples"]]
    published_rows = [(b, refs[b]) for b in run["baselines"] if b in refs]
    sizes = {task: max((s.get(task, {}).get("n", 0) for s in run["results"].values()), default=0)
             for task in dict.fromkeys(m.source for m in columns)}
    blocks = [("h2", "Benchmarks")]
    for (title, note), group in zip(GROUPS, groups):
        rows, keys = [], []
        for rung in order:
            info = run["rungs"].get(rung, {})
            if info.get("kind") == "reference" and group is not groups[2]:
                continue  # the validation text is only read as samples
            note_cell = info.get("note") or ("" if rung in run["results"] else "not evaluated")
            rows.append([rung, info.get("kind") or MISSING,
                         *(with_stderr(m, *score(run, rung, m.source, m.key)) for m in group), note_cell])
            keys.append(rung)
        for baseline, ref in published_rows:
            values = [(published(ref, m.source, m.key) or {}).get("value") for m in group]
            if any(v is not None for v in values):
                measured = baseline_measured(run, baseline)[0]
                rows.append([f"{ref['name']} (published{'' if measured else ', not measured'})", "published",
                             *(m.format(v, MISSING) for m, v in zip(group, values)),
                             "harness-comparable published numbers; sources below"])
                keys.append(f"published/{baseline}")
        table = "benchmarks" if group is groups[0] else ("accuracy" if group is groups[1] else "readings")
        blocks += [("h3", title), ("p", f"{note.capitalize()}, ± one standard error where there is one."),
                   ("table", table, ["rung", "kind", *(m.label for m in group), "note"], rows, keys)]
    blocks.append(("p", READING_NOTE))
    if any(sizes.values()):
        blocks.append(("p", "Items per task: " + ", ".join(f"{t} {n}" for t, n in sizes.items() if n) + "."))
    panels = ladder_panels(run, order, refs)
    if panels:
        plot_ladder(panels, out_dir / "ladder.png")
        blocks.append(("img", "ladder.png", "each benchmark per rung, the baselines as lines"))
    else:
        blocks.append(("p", "No benchmark results to chart (eval/results.json is missing or empty)."))
    return blocks


def ladder_panels(run: dict, order: list[str], refs: dict[str, dict]) -> list[Panel]:
    """A panel per `chart` metric that some rung has: the rungs' values (percentages as percent), a line per
    baseline (measured, else its published number, "published, not measured") and chance for accuracies."""
    rungs = [r for r in order if r not in run["baselines"] and run["rungs"].get(r, {}).get("kind") != "reference"]
    chances = refs[next(iter(refs))].get("chance", {}) if refs else {}
    measured = {b: baseline_measured(run, b)[0] for b in run["baselines"]}
    panels = []
    for m in metrics.shown("chart"):
        scale = 100 if m.percent else 1
        points = []
        for rung in rungs:
            value, stderr = map(finite, score(run, rung, m.source, m.key))
            points.append((rung, None if value is None else value * scale, None if stderr is None else stderr * scale))
        if all(value is None for _, value, _ in points):
            continue
        lines = []
        for baseline in run["baselines"]:
            base = finite(score(run, baseline, m.source, m.key)[0]) if measured[baseline] else None
            entry = published(refs[baseline], m.source, m.key) if baseline in refs else None
            if base is not None:
                lines.append((base * scale, f"{baseline} (measured)", True))
            elif entry and not measured[baseline]:
                lines.append((entry["value"] * scale, f"{refs[baseline]['name']}: published,\nnot measured", False))
        chance = chances.get(m.source) if m.percent else None
        panels.append(Panel(m.label + (" (%)" if m.percent else ""), points, m.higher_is_better is False,
                            m.log_scale, lines, None if chance is None else chance * scale))
    return panels


def reference_section(ref: dict, measured: bool) -> list[tuple]:
    """Every published number of one baseline with its setting, source and whether it is harness-comparable."""
    header = ["task", "metric", ref["name"], "setting", "source", "kind of source", "harness-comparable"]
    rows = [[p["task"], p["metric"], metric_of(p["task"], p["metric"]).format(p["value"]),
             p["setting"], p["source"] + (f" ({p['caveat']})" if p.get("caveat") else ""), p["source_kind"],
             "yes" if p["harness_comparable"] else "no"] for p in ref["published"]]
    use = ("It was measured in this run: these published numbers stand beside the measured ones." if measured else
           "The harness-comparable numbers are drawn as its line wherever it was not measured.")
    return [("h2", f"{ref['name']}: published numbers"),
            ("p", f"{ref['name']} ({ref['model']}): {count(ref['parameters'])} parameters ({ref['parameters_source']})."
                  f" Training tokens: {'~' if ref.get('training_tokens_is_estimate') else ''}"
                  f"{count(ref['training_tokens'])}, {ref['training_tokens_source']}"),
            ("p", use),
            ("table", f"reference-{ref.get('rung', ref['name'])}", header, rows,
             [f"{p['task']}/{p['metric']}" for p in ref["published"]])]


def quantization_section(run: dict) -> list[tuple]:
    """Size, speed and perplexity of each quantized variant against fp32 (the `quantization` metrics); nothing
    when quantize did not run."""
    values = run["stages"].get("quantize", {}).get("metrics", {})
    variants = [k[: -len("_perplexity")] for k in values if k.endswith("_perplexity")]
    if not variants:
        return []
    columns = metrics.shown("quantization", "quantize")
    rows = [[v, *(m.format(values.get(f"{v}_{m.key}"), MISSING) for m in columns)] for v in variants]
    return [("h2", "Quantization cost"),
            ("p", "Measured by the quantize stage on its held-out text; '× fp32 (linear)' is the linear layers' size "
                  "relative to fp32, 'Δ perplexity' the change relative to fp32."),
            ("table", "quantization", ["variant", *(m.label for m in columns)], rows, variants)]


def chinchilla_section(run: dict, ref: dict, out_dir: Path) -> list[tuple]:
    """This run's tokens per parameter, the map (chinchilla.png) and the reference models with their sources."""
    chin = ref["chinchilla"]
    ratio = chin["tokens_per_parameter"]
    params, tokens = run_size(run)
    this_run = (params, tokens, f"this run ({run['recipe']}): {count(params)} parameters, {count(tokens)} tokens, "
                                f"{tokens / params:.1f} tokens / parameter") if params and tokens else None
    plot_chinchilla(chin["models"], ratio, this_run, out_dir / "chinchilla.png")
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
            ("p", "The same prompts, generated by every rung and baseline with the same decoding; under each sample "
                  "its judge perplexity, rep_4 and coherence (0-100). The last column is the validation text's own "
                  "line after the same prompt, where it has one."),
            ("p", READING_NOTE),
            ("table", "samples", ["prompt", *rungs], rows, [f"{s}/{p}" for s, p in prompts])]


def sample_cell(sample: dict | None) -> str:
    """A sample's text with its readings under it (judge ppl, rep_4, coherence), or "—"."""
    if sample is None:
        return MISSING
    readings = [f"{m.label} {m.format(sample.get(m.key.removesuffix('_mean')), MISSING)}"
                for m in metrics.shown("rungs", "samples")]  # the headline readings
    return f"{sample['text']}\n\n[{' · '.join(readings)}]"
