"""When the monitor says the stage overfits, the stage keeps the best-validation checkpoint, not the last step."""

import json
from pathlib import Path

import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from hf_ladder.ladder import run_stage


def overfitting_run(tmp_path, data_dir, *overrides):
    """Pretraining on 4,200 characters of TinyShakespeare (30 % held out) at a high learning rate, evaluated and
    checkpointed every 10 steps (two checkpoints kept): validation loss bottoms out early, then rises for good.
    Returns (result, log history, the stage's folder)."""
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:6000]
    small = tmp_path / "small.txt"
    small.write_text(text, encoding="utf-8")
    recipe = tiny_recipe(tmp_path / "run", f"data.path={small}", "data.validation_fraction=0.3",
                         "tokenizer.vocab_size=400", "pretrain.max_steps=100", "pretrain.learning_rate=1e-2",
                         "pretrain.eval_steps=10", "pretrain.save_steps=10", "pretrain.logging_steps=5",
                         "monitor.sample_every=1000", "monitor.patience=3", *overrides)
    result = run_stage("pretrain", recipe)
    stage = Path(recipe.run_dir) / "pretrain"
    return result, json.loads((stage / "log_history.json").read_text()), stage


def same_weights(model_dir: Path, checkpoint: Path) -> bool:
    model, saved = load_file(model_dir / "model.safetensors"), load_file(checkpoint / "model.safetensors")
    return model.keys() == saved.keys() and all(torch.equal(model[k], saved[k]) for k in model)


def test_after_an_overfitting_alert_the_stage_keeps_the_best_validation_checkpoint(tmp_path, data_dir, capsys):
    result, history, stage = overfitting_run(tmp_path, data_dir)
    out = capsys.readouterr().out
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    best = min(evals, key=evals.get)
    assert result.status == "finished" and result.metrics["overfitting_alerts"] >= 1
    assert best < result.metrics["global_step"] == 100 and evals[100] > evals[best] + 0.3  # it did overfit
    assert result.metrics["kept_best"] == 1 and result.metrics["kept_step"] == best
    assert result.metrics["kept_eval_loss"] == evals[best]
    checkpoint = stage / "checkpoints" / f"checkpoint-{best}"
    kept = sorted(p.name for p in checkpoint.parent.glob("checkpoint-*"))
    assert kept == sorted([checkpoint.name, "checkpoint-100"])  # save_total_limit 2: the best survives rotation
    assert same_weights(stage / "model", checkpoint)  # model/ holds the best checkpoint's weights ...
    assert not same_weights(stage / "model", stage / "checkpoints" / "checkpoint-100")  # ... not the last's
    assert result.metrics["val_loss"] < evals[100] - 0.3  # and the stage's own scores are the kept model's
    assert f"model/ is the best-validation checkpoint, step {best} (eval_loss {evals[best]:.3f}), not the last, " \
           f"step 100 (eval_loss {evals[100]:.3f})" in out
    assert json.loads((stage / "metrics.json").read_text())["kept_step"] == best


def test_keep_best_on_overfit_false_keeps_the_last_step(tmp_path, data_dir, capsys):
    """With `stop_on_overfit` too: the stage stops at the alert and keeps that step, and names the best one."""
    result, history, stage = overfitting_run(tmp_path, data_dir, "monitor.keep_best_on_overfit=false",
                                             "monitor.stop_on_overfit=true")
    out = capsys.readouterr().out
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    best, last = min(evals, key=evals.get), result.metrics["global_step"]
    assert result.status == "stopped" and best < last < 100
    assert result.metrics["kept_best"] == 0 and result.metrics["kept_step"] == last
    assert result.metrics["kept_eval_loss"] == evals[last]
    assert same_weights(stage / "model", stage / "checkpoints" / f"checkpoint-{last}")
    assert f"model/ is the last, step {last} (eval_loss {evals[last]:.3f}), as `monitor.keep_best_on_overfit: " \
           f"false` asks; the best-validation checkpoint, step {best} (eval_loss {evals[best]:.3f}), is " in out
    assert (stage / "checkpoints" / f"checkpoint-{best}").is_dir()
