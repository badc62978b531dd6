"""The sample monitor on real runs: auto-halt on a collapsed model, memorization and overfitting alerts."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from hf_ladder.data.corpus import load_corpus, load_play
from hf_ladder.data.tokenizer import train_bpe
from hf_ladder.ladder import run_stage
from hf_ladder.monitor import NgramIndex
from hf_ladder.monitor.reading import FIELDS
from hf_ladder.monitor.trackers import round_markdown
from hf_ladder.schema import DataConfig

SONNET_18 = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;"""


def tensorboard(stage_dir: Path) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, float]]]:
    """The stage's `samples` TensorBoard run read back with TensorBoard's own EventAccumulator:
    ({text tag: {step: markdown}}, {scalar tag: {step: value}})."""
    events = EventAccumulator(str(stage_dir / "checkpoints" / "runs" / "samples"), size_guidance={"tensors": 0})
    events.Reload()
    texts = {tag.removesuffix("/text_summary"): {e.step: make_ndarray(e.tensor_proto).item().decode()
                                                 for e in events.Tensors(tag)} for tag in events.Tags()["tensors"]}
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    return texts, scalars


def rounds(stage_dir: Path) -> dict[int, list[dict]]:
    rows = [json.loads(line) for line in (stage_dir / "samples.jsonl").read_text().splitlines()]
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["step"], []).append(r)
    return out


def test_ngram_index_finds_the_copied_span_and_not_held_out_text():
    corpus = load_corpus(DataConfig())
    index = NgramIndex(corpus.train, n=8)
    hamlet = "Now listen: To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer"
    match = index.find(hamlet)
    assert match is not None and match.words >= 14
    assert match.train_span.startswith("To be, or not to be: that is the question")
    assert corpus.train[match.train_doc][match.train_char:].startswith("To be, or not to be")
    held_out = load_play("macbeth").text()[20000:21000]
    assert index.find(held_out) is None


@pytest.fixture()
def collapsed_model(tmp_path) -> Path:
    """A tiny GPT-2 whose every prediction is the same token: the final norm emits one fixed vector."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = train_bpe(load_corpus(DataConfig()).train[:3], vocab_size=512)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id))
    target = tok(" the", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        wte = model.transformer.wte.weight  # tied to the output layer
        wte[target] *= 10
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(wte[target] * 10)
    path = tmp_path / "collapsed"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_collapsed_model_halts_within_five_samples(tmp_path, collapsed_model):
    recipe = tiny_recipe(tmp_path / "run", "model={init_from: %s}" % collapsed_model, "pretrain.max_steps=200",
                         "pretrain.learning_rate=1e-9", "pretrain.weight_decay=0", "monitor.sample_every=2",
                         "pretrain.eval_steps=50")
    result = run_stage("pretrain", recipe)
    assert result.status == "halted"
    assert "coherence below 30" in result.reason and "5 consecutive" in result.reason
    assert result.metrics["halted"] == 1
    stage = Path(recipe.run_dir) / "pretrain"
    seen = rounds(stage)
    assert len(seen) == 5 and max(seen) <= 5 * 2  # rounds at steps 0, 2, 4, 6, 8
    assert all(r["coherence"] < 30 for rs in seen.values() for r in rs)
    assert "the the the" in seen[8][0]["text"]
    assert (stage / "model" / "model.safetensors").is_file()  # the checkpoint is kept
    assert list((stage / "checkpoints").glob("checkpoint-8"))
    manifest = json.loads((Path(recipe.run_dir) / "manifest.json").read_text())
    assert manifest["stages"]["pretrain"]["status"] == "halted"


def planted_corpus(tmp_path: Path, data_dir: Path, copies: int) -> Path:
    filler = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:20000]
    path = tmp_path / "planted.txt"
    path.write_text((SONNET_18 + "\n\n") * copies + filler, encoding="utf-8")  # the tail 10% is validation
    return path


def test_a_planted_training_passage_raises_the_memorization_alert(tmp_path, data_dir):
    corpus = planted_corpus(tmp_path, data_dir, copies=60)
    recipe = tiny_recipe(tmp_path / "run", f"data.path={corpus}", "tokenizer.vocab_size=512",
                         "pretrain.max_steps=200", "monitor.sample_every=50", "monitor.judge=smollm2-135m-instruct",
                         'monitor.prompts=["Shall I compare thee to a summer", "ROMEO:\\n"]')
    result = run_stage("pretrain", recipe)
    assert result.metrics["memorization_alerts"] >= 1
    rows = [r for step in rounds(Path(recipe.run_dir) / "pretrain").values() for r in step]
    assert rows and all(set(FIELDS) <= set(r) for r in rows)  # every sample row carries every reading
    assert all((r["judge_ppl"] is None) == (not r["text"].strip()) for r in rows)  # the judge read each one
    copied = [r for r in rows if "memorized" in r]
    assert copied and all(r["loss_tier"] in ("memorized substring", "recall") for r in copied)
    untrained = sorted(r["judge_ppl"] for r in rows if r["step"] == 0 and r["judge_ppl"] is not None)
    # the copied sonnet reads as English to the judge; the untrained model's noise does not (a run of blank lines
    # from it may: the judge is not surprised by repetition, which is why rep_4 is read beside it)
    assert max(r["judge_ppl"] for r in copied) < 50 < untrained[len(untrained) // 2]
    alerts = json.loads((Path(recipe.run_dir) / "pretrain" / "alerts.json").read_text())
    memorized = [a for a in alerts if a["type"] == "memorization"]
    assert memorized and all(a["loss"] < 0.20 for a in memorized)
    assert memorized[0]["prompt"].startswith("Shall I compare")
    assert "Thou art more lovely and more temperate" in memorized[0]["train_span"]
    assert memorized[0]["words"] >= 8

    # the same rounds and alerts in TensorBoard: every sample as text at its round's step, the round's means as
    # scalars, the judge's readings after training, the memorization alert with its training span
    texts, scalars = tensorboard(Path(recipe.run_dir) / "pretrain")
    by_step = rounds(Path(recipe.run_dir) / "pretrain")
    assert set(texts["samples"]) == set(by_step) == set(scalars["samples/sampled/coherence"])
    for step, step_rows in by_step.items():  # the round as written (judge after training), then as judged
        assert texts["samples"][step] == round_markdown([{**r, "judge_ppl": None} for r in step_rows])
        sampled = [r for r in step_rows if r["decoding"] == "sampled"]
        assert scalars["samples/sampled/coherence"][step] == pytest.approx(
            sum(r["coherence"] for r in sampled) / len(sampled), rel=1e-6)
        judged = [r["judge_ppl"] for r in sampled if r["judge_ppl"] is not None]
        if judged:
            assert scalars["samples/sampled/judge_ppl"][step] == pytest.approx(sum(judged) / len(judged), rel=1e-5)
            assert texts["samples_judged"][step] == round_markdown(step_rows)
    assert "judge ppl after training" in texts["samples"][0]
    alert = texts["alerts"][memorized[0]["step"]]
    assert "**memorization**" in alert and "Thou art more lovely and more temperate" in alert


def overfitting_run(tmp_path, data_dir, stop: bool):
    """Pretraining on 4,200 characters of TinyShakespeare (30 % held out), evaluated every 10 steps: it overfits."""
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:6000]
    small = tmp_path / "small.txt"
    small.write_text(text, encoding="utf-8")
    recipe = tiny_recipe(tmp_path / "run", f"data.path={small}", "data.validation_fraction=0.3",
                         "tokenizer.vocab_size=400", f"pretrain.max_steps={400 if stop else 200}",
                         "pretrain.eval_steps=10", "pretrain.logging_steps=5", "monitor.sample_every=1000",
                         "monitor.patience=3", f"monitor.stop_on_overfit={str(stop).lower()}")
    result = run_stage("pretrain", recipe)
    stage = Path(recipe.run_dir) / "pretrain"
    return result, json.loads((stage / "alerts.json").read_text()), json.loads((stage / "log_history.json").read_text())


def first_overfitting_step(history: list[dict], patience: int = 3) -> int:
    """From the Trainer's log history alone: the first evaluation step closing `patience` rises of the validation
    loss while the training loss (last logged at or before each evaluation) fell over the same window."""
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    train = lambda step: [h["loss"] for h in history if "loss" in h and h["step"] <= step][-1]  # noqa: E731
    for i in range(patience, len(evals)):
        window = evals[i - patience: i + 1]
        if all(b[1] > a[1] for a, b in zip(window, window[1:])) and train(window[-1][0]) < train(window[0][0]):
            return window[-1][0]
    raise AssertionError("the log history shows no overfitting")


def test_rising_validation_loss_raises_the_overfitting_alert_and_can_stop(tmp_path, data_dir):
    result, alerts, history = overfitting_run(tmp_path, data_dir, stop=True)
    assert result.status == "stopped" and "overfitting" in result.reason
    step = first_overfitting_step(history)
    assert result.metrics["overfitting_alerts"] == 1 and result.metrics["global_step"] == step < 400
    (alert,) = alerts
    evals = [h["eval_loss"] for h in history if "eval_loss" in h and h["step"] <= step]
    assert alert["step"] == step and alert["eval_losses"] == evals[-4:]  # the very numbers the Trainer logged
    texts, _ = tensorboard(Path(result.model_dir).parent)
    assert list(texts["alerts"]) == [step] and texts["alerts"][step].startswith("**overfitting** at step")


def test_the_overfitting_alert_without_stop_on_overfit_lets_training_finish(tmp_path, data_dir):
    result, alerts, history = overfitting_run(tmp_path, data_dir, stop=False)
    assert result.status == "finished" and result.reason is None and result.metrics["global_step"] == 200
    assert alerts and alerts[0]["type"] == "overfitting" and alerts[0]["step"] == first_overfitting_step(history)
    assert result.metrics["overfitting_alerts"] == len(alerts)


def test_a_resumed_run_carries_the_halt_streak_over(tmp_path, collapsed_model):
    """Killed after four collapsed rounds (steps 0, 2, 4, 6; checkpoint-4 saved), the rerun resumes from step 4 and
    halts after two more (6 again, 8), as an uninterrupted run does: the streak is rebuilt from samples.jsonl, not
    restarted; TensorBoard holds each round once (the dead attempt's step 6 purged)."""
    from unittest import mock

    from hf_ladder.monitor import SampleMonitor

    recipe = tiny_recipe(tmp_path / "run", "model={init_from: %s}" % collapsed_model, "pretrain.max_steps=200",
                         "pretrain.learning_rate=1e-9", "pretrain.weight_decay=0", "monitor.sample_every=2",
                         "pretrain.eval_steps=50", "pretrain.save_steps=4")
    real = SampleMonitor.on_step_end

    def killed_at_7(self, args, state, control, **kwargs):
        if state.global_step == 7:
            raise RuntimeError("killed")
        return real(self, args, state, control, **kwargs)

    with mock.patch.object(SampleMonitor, "on_step_end", killed_at_7), pytest.raises(RuntimeError, match="killed"):
        run_stage("pretrain", recipe)
    stage = Path(recipe.run_dir) / "pretrain"
    assert sorted(rounds(stage)) == [0, 2, 4, 6]
    assert [p.name for p in (stage / "checkpoints").glob("checkpoint-*")] == ["checkpoint-4"]
    result = run_stage("pretrain", recipe)
    assert result.status == "halted" and "steps 0-8" in result.reason
    assert sorted(rounds(stage)) == [0, 2, 4, 6, 8]
    events = EventAccumulator(str(stage / "checkpoints" / "runs" / "samples"), size_guidance={"scalars": 0})
    events.Reload()  # (EventAccumulator applies the purge to scalars; it keeps both copies of a text entry)
    assert [e.step for e in events.Scalars("samples/sampled/coherence")] == [0, 2, 4, 6, 8]


def test_a_resumed_monitor_rebuilds_its_alerts_rounds_and_evaluations(tmp_path):
    """on_train_begin of a resumed run: sample rows up to the checkpoint's step are kept (later ones dropped and
    sampled again), memorization alerts and the rounds' mean coherence come back from them, evaluations from the
    restored log history."""
    from types import SimpleNamespace

    from hf_ladder.monitor import SampleMonitor
    from hf_ladder.runs import read_jsonl, write_jsonl
    from hf_ladder.schema import MonitorConfig

    path = tmp_path / "samples.jsonl"
    memorized = {"words": 9, "train_span": "Shall I compare thee", "train_doc": 0, "train_char": 0}
    rows = [{"step": s, "prompt": p, "decoding": d, "text": "x", "coherence": c, "loss": 0.1 if m else 3.0,
             **({"memorized": memorized} if m else {})}
            for s, p, d, c, m in [(0, "A", "sampled", 20.0, False), (0, "A", "greedy", 90.0, False),
                                  (10, "A", "sampled", 25.0, True), (10, "B", "sampled", 35.0, False),
                                  (20, "A", "sampled", 10.0, True)]]
    write_jsonl(path, rows)
    tokenizer = train_bpe(["Shall I compare thee to a summer's day? " * 20], vocab_size=300)
    monitor = SampleMonitor(MonitorConfig(), tokenizer, train_docs=[], samples_path=path)
    history = [{"loss": 4.0, "step": 5}, {"eval_loss": 4.5, "step": 10}, {"loss": 3.5, "step": 15}]
    state = SimpleNamespace(global_step=10, is_world_process_zero=True, log_history=history)
    monitor.on_train_begin(None, state, None)
    assert monitor.rounds == [{"step": 0, "coherence": 20.0}, {"step": 10, "coherence": 30.0}]  # sampled only
    assert [(a["type"], a["step"], a["train_span"]) for a in monitor.alerts] == [("memorization", 10, memorized[
        "train_span"])]
    assert monitor.evals == [{"step": 10, "train_loss": 4.0, "eval_loss": 4.5}]
    assert [r["step"] for r in read_jsonl(path)] == [0, 0, 10, 10]  # step 20 comes after the checkpoint


def test_the_last_steps_round_comes_after_the_trainers_clock_stops(tmp_path):
    """Rounds at steps 0 and 4 run before training or inside it; the one at the last step (8) runs once the Trainer
    has stopped its train_runtime clock (`_finalize_training`), and samples.jsonl still holds it."""
    from unittest import mock

    from transformers import Trainer

    from hf_ladder.monitor import SampleMonitor

    recipe = tiny_recipe(tmp_path / "run", "pretrain.max_steps=8", "monitor.sample_every=4")
    clock_stopped, when = [], {}
    real_round, real_finalize = SampleMonitor.sample_round, Trainer._finalize_training

    def sample_round(self, model, step, *a, **k):
        when[step] = bool(clock_stopped)
        return real_round(self, model, step, *a, **k)

    def finalize(self, *a, **k):
        clock_stopped.append(True)
        return real_finalize(self, *a, **k)

    with mock.patch.object(SampleMonitor, "sample_round", sample_round), \
            mock.patch.object(Trainer, "_finalize_training", finalize):
        result = run_stage("pretrain", recipe)
    assert when == {0: False, 4: False, 8: True}
    seen = rounds(Path(recipe.run_dir) / "pretrain")
    assert sorted(seen) == [0, 4, 8]
    last = [r["coherence"] for r in seen[8] if r["decoding"] == "sampled"]
    assert result.metrics["coherence_final"] == pytest.approx(sum(last) / len(last))  # the stage read that round
