"""The ladder report on a fake but real-shaped run: its tables and banner, and its page in headless Chromium."""

import html
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import chromium_summary

from hf_ladder.eval.report import write_report

STAGES = ["pretrain", "sft", "dpo", "lora", "quantize"]
VARIANTS = ["int8", "nf4", "fp4"]
RUNGS = ["pretrain", "sft", "dpo", "lora", *(f"quantize/{v}" for v in VARIANTS)]
PROMPTS = ["ROMEO:\n", "KING HENRY V:\n", "First Citizen:\n"]
NOTE = "openai-community/gpt2 could not be loaded (Hub unreachable: OfflineModeIsEnabled)"
NASTY = "<script>alert('x')</script> & <b>bold</b> | pipe"  # must come out escaped, never as markup


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


def log_history(steps: int, start: float, end: float, every: int = 25, eval_every: int = 100) -> list[dict]:
    """Trainer-shaped log history: train `loss` every `every` steps, `eval_loss` every `eval_every`, a summary."""
    loss = lambda s: end + (start - end) * (1 - s / steps) ** 2  # noqa: E731
    rows = []
    for step in range(every, steps + 1, every):
        rows.append({"loss": loss(step), "grad_norm": 1.0, "learning_rate": 1e-3, "epoch": step / steps, "step": step})
        if step % eval_every == 0:
            rows.append({"eval_loss": loss(step) + 0.15, "eval_runtime": 1.7, "epoch": step / steps, "step": step})
    rows.append({"train_runtime": 60.0, "train_loss": (start + end) / 2, "epoch": 1.0, "step": steps})
    return rows


def scores(rung: str, i: int) -> dict:
    """results.json for one rung, a little better up the ladder; a few tasks left out on purpose."""
    out = {
        "heldout": {"token_perplexity": 75.0 - 2 * i, "bits_per_byte": 2.35 - 0.02 * i, "word_perplexity": 410.0},
        "wikitext": {"word_perplexity": 3100.0 - 50 * i, "byte_perplexity": 7.4, "bits_per_byte": 2.89 - 0.01 * i,
                     "token_perplexity": 620.0},
        "hellaswag": {"acc": 0.252 + 0.002 * i, "acc_stderr": 0.0137, "acc_norm": 0.258 + 0.002 * i,
                      "acc_norm_stderr": 0.0138, "n": 1000},
        "lambada_openai": {"acc": 0.004, "acc_stderr": 0.0028, "perplexity": 48000.0 - 1000 * i, "n": 500},
        "mmlu": {"acc": 0.241, "acc_stderr": 0.0114, "n": 1400, "acc/anatomy": 0.2},
        "mmlu_5shot": {"acc": 0.246, "acc_stderr": 0.0115, "n": 1400, "acc/anatomy": 0.21},
        "samples": {"coherence_mean": 80.0 + i, "judge_ppl_mean": 900.0 - 10 * i, "rep_4_mean": 0.05,
                    "distinct_2_mean": 0.9},
    }
    if rung == "dpo":
        del out["mmlu_5shot"]
    if rung == "quantize/fp4":
        del out["wikitext"]
    return out


def fake_run(root: Path, baseline_measured: bool = False, baseline: str = "gpt2", smollm2: bool = False) -> Path:
    """runs/<recipe>/ with every stage of the ladder and an eval/ folder as `hf-ladder eval` writes it; the
    baseline rung is named after its source (`openai-community/gpt2` -> gpt2, a local folder -> its name).
    `smollm2`: a second, measured baseline (smollm2-135m-instruct) and the validation text's reference rung."""
    run = root / "shakespeare-tiny"
    manifest = {"recipe": "shakespeare-tiny", "stages": {}}
    for i, stage in enumerate(STAGES):
        metrics = {"global_step": 300, "coherence_final": 85.0}
        if stage == "pretrain":
            metrics.update(parameters=1071872, tokens_seen=2457600, val_loss=4.29)
        if stage == "quantize":
            metrics = {f"{v}_{k}": x for v in ["fp32", *VARIANTS] for k, x in
                       [("perplexity", 68.0 + VARIANTS.index(v) * 0.2 if v in VARIANTS else 68.0),
                        ("bits_per_byte", 2.311), ("linear_bytes", 3164160 // (4 if v == "int8" else 7)),
                        ("memory_bytes", 1928192), ("disk_bytes", 1954640), ("tokens_per_second", 300.0)]}
            metrics.update({f"{v}_perplexity_change": 0.003 * (j + 1) for j, v in enumerate(VARIANTS)})
        else:
            write_json(run / stage / "log_history.json", log_history(300, 6.9 - i, 4.1 - 0.2 * i))
            alerts = []
            if stage == "sft":
                alerts = [{"type": "overfitting", "step": 200, "message": "overfitting: validation loss rose",
                           "eval_losses": [4.3, 4.35, 4.4], "train_losses": [4.2, 4.1, 4.0]}]
            if stage == "lora":
                alerts = [{"type": "memorization", "step": 250, "prompt": "ROMEO:\n", "loss": 0.12, "words": 14,
                           "train_span": "To be, or not to be", "train_doc": 3, "train_char": 100}]
            write_json(run / stage / "alerts.json", alerts)
        write_json(run / stage / "metrics.json", metrics)
        manifest["stages"][stage] = {"stage": stage, "status": "finished", "model_dir": f"{stage}/model",
                                     "metrics": metrics, "reason": None, "wall_time_s": 60.0 + i, "inputs": {}}
    write_json(run / "manifest.json", manifest)

    results = {rung: scores(rung, i) for i, rung in enumerate(RUNGS)}
    rungs = {rung: {"kind": "variant" if "/" in rung else "stage", "model_dir": f"{rung}/model",
                    "parameters": 1071872, "tokens_seen": 2457600 if rung == "pretrain" else None,
                    "measured": True, "note": None} for rung in RUNGS}
    rungs[baseline] = {"kind": "baseline", "model_dir": None, "parameters": None, "tokens_seen": None,
                     "measured": baseline_measured, "note": None if baseline_measured else NOTE}
    if baseline_measured:
        results[baseline] = scores(baseline, 20)
        rungs[baseline].update(model_dir=f"/models/{baseline}", parameters=124439808)
    extra = []
    if smollm2:
        results["smollm2-135m-instruct"] = scores("smollm2-135m-instruct", 30)
        rungs["smollm2-135m-instruct"] = {"kind": "baseline", "model_dir": "smollm2-135m-instruct",
                                          "parameters": 134515008, "tokens_seen": None, "measured": True,
                                          "note": None, "label": "SmolLM2-135M-Instruct, instruction-tuned: Q4_1"}
        results["validation text"] = {"samples": {"coherence_mean": 90.0, "judge_ppl_mean": 60.0, "rep_4_mean": 0.0}}
        rungs["validation text"] = {"kind": "reference", "model_dir": None, "parameters": None, "tokens_seen": None,
                                    "measured": True, "note": "real lines"}
        extra = ["smollm2-135m-instruct", "validation text"]
    write_json(run / "eval" / "results.json", results)
    write_json(run / "eval" / "rungs.json", rungs)
    lines = [{"rung": rung, "prompt": prompt, "prompt_set": "shakespeare", "coherence": 70.0 + i,
              "rep_4": 0.01 * i, "distinct_2": 0.9, "judge_ppl": 500.0 + i, "loss_tier": "early",
              "text": f"I will not, my lord.\nThe {rung} speaks{'. ' + NASTY if i == 0 else ''}"}
             for rung in [*RUNGS, *([baseline] if baseline_measured else []), *extra]
             for i, prompt in enumerate(PROMPTS)]
    (run / "eval" / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return run


def table_keys(page: str, table: str) -> list[str]:
    """The data-key of every row of the HTML table with id `table`."""
    body = re.search(rf'<table id="{table}">(.*?)</table>', page, re.S).group(1)
    return [html.unescape(k) for k in re.findall(r'<tr data-key="([^"]*)"', body)]


def test_report_tables_banner_and_escaping(tmp_path):
    index = write_report(fake_run(tmp_path))
    out = index.parent
    assert index == tmp_path / "shakespeare-tiny" / "report" / "index.html"
    page, md = index.read_text(), (out / "report.md").read_text()

    assert table_keys(page, "stages") == STAGES
    assert table_keys(page, "benchmarks") == [*RUNGS, "gpt2", "published/gpt2"]
    assert table_keys(page, "accuracy") == [*RUNGS, "gpt2", "published/gpt2"]
    assert table_keys(page, "readings") == [*RUNGS, "gpt2"]  # GPT-2 small has no published sample readings
    assert table_keys(page, "quantization") == ["fp32", *VARIANTS]
    assert table_keys(page, "samples") == [f"shakespeare/{p}" for p in PROMPTS]
    for stage in STAGES:
        assert f"| {stage} | finished |" in md
    for rung in RUNGS:
        assert f"| {rung} |" in md

    # GPT-2 was not measured: a banner saying why, and every GPT-2 number labelled as published with a source
    assert 'id="baseline-banner"' in page and html.escape(NOTE) in page
    assert "not measured" in md.split("## Stages")[0] and NOTE in md
    assert "| GPT-2 small (published, not measured) |" in md
    assert "31.1%" in md and "llm.c dev/data/hellaswag.py" in md and "issue #2159" in md
    assert "26.0%<br>± 1.4%" in md  # sft's acc_norm with its stderr under it, in % (hf_ladder.metrics: ".1%")
    dpo_rows = [line for line in md.splitlines() if line.startswith("| dpo | stage |")]
    assert [row.count("—") for row in dpo_rows] == [0, 1, 0]  # language modelling, accuracy (no 5-shot MMLU), readings

    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<script>alert" not in md and "\\| pipe" in md
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ["chinchilla.png", "ladder.png", "losses.png"]
    assert all((out / name).stat().st_size > 10_000 for name in images)
    assert all(f"]({name})" in md for name in images)
    assert not list(out.glob(".*tmp*"))


def test_measured_baseline_is_a_row_and_no_banner(tmp_path):
    run = fake_run(tmp_path, baseline_measured=True, baseline="tiny-gpt2")
    results = json.loads((run / "eval" / "results.json").read_text())
    results["pretrain"]["lambada_openai"]["perplexity"] = float("inf")  # a tiny model can give a target zero mass
    write_json(run / "eval" / "results.json", results)
    index = write_report(run, out_dir=tmp_path / "out")
    page = index.read_text()
    assert index.parent == tmp_path / "out"
    assert "baseline-banner" not in page
    assert table_keys(page, "benchmarks") == [*RUNGS, "tiny-gpt2"]  # no published numbers of a local folder
    assert "<th>tiny-gpt2</th>" in page  # a samples column
    assert "<td>inf</td>" in page  # shown in the table, left out of the chart


def test_report_without_eval_results(tmp_path):
    run = fake_run(tmp_path)
    shutil.rmtree(run / "eval")
    page = write_report(run).read_text()
    assert table_keys(page, "stages") == STAGES
    assert table_keys(page, "benchmarks") == [*STAGES, "published/gpt2"]  # a row per stage, all "—"
    assert "no eval results yet" in page and "ladder.png" not in page


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        write_report(tmp_path)


def test_report_page_loads_in_chromium(tmp_path):
    summary = chromium_summary(write_report(fake_run(tmp_path)), tmp_path)
    assert len(summary["images"]) == 3
    assert all(img["ok"] for img in summary["images"]), summary["images"]
    assert summary["stages"] == STAGES
    assert summary["rungs"] == [*RUNGS, "gpt2", "published/gpt2"]


def test_two_baselines_measured_and_published_and_the_reference_row(tmp_path):
    """GPT-2 unreachable (published numbers, a banner), SmolLM2 measured (rows in every table, a samples
    column, its published numbers beside), the validation text as a reference row of the readings and samples;
    in Chromium at 1400 pixels every benchmark table fits without scrolling sideways."""
    index = write_report(fake_run(tmp_path, smollm2=True))
    page, md = index.read_text(), (index.parent / "report.md").read_text()
    smol = "smollm2-135m-instruct"
    assert table_keys(page, "benchmarks") == [*RUNGS, "gpt2", smol, "published/gpt2"]
    assert table_keys(page, "accuracy") == [*RUNGS, "gpt2", smol, "published/gpt2", f"published/{smol}"]
    assert table_keys(page, "readings") == [*RUNGS, "gpt2", smol, "validation text"]
    assert f"<th>{smol}</th>" in page and "<th>validation text</th>" in page  # samples columns
    assert "Baseline smollm2-135m-instruct: SmolLM2-135M-Instruct, instruction-tuned: Q4_1" in md
    assert "| SmolLM2-135M-Instruct (published) |" in md and "43.0%" in md  # beside the measured row
    assert "judge ppl 500.0 · rep_4 0.00 · coherence 70" in md  # under each sample
    assert "Judge perplexity and rep_4 are read together" in md
    summary = chromium_summary(index, tmp_path)
    assert summary["stages"] == STAGES and all(img["ok"] for img in summary["images"])
    assert all(width <= 1400 for width in summary["widths"].values()), summary["widths"]
    assert summary["samples"] == ["prompt", *RUNGS, smol, "validation text"]  # a column per measured baseline
