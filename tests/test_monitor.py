"""The sample monitor on real runs: auto-halt on a collapsed model, memorization and overfitting alerts."""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe

from hf_ladder.data.corpus import load_corpus, load_play
from hf_ladder.data.tokenizer import train_bpe
from hf_ladder.ladder import run_stage
from hf_ladder.monitor import NgramIndex
from hf_ladder.schema import DataConfig

SONNET_18 = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;"""


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
                         "pretrain.max_steps=200", "monitor.sample_every=50",
                         'monitor.prompts=["Shall I compare thee to a summer", "ROMEO:\\n"]')
    result = run_stage("pretrain", recipe)
    assert result.metrics["memorization_alerts"] >= 1
    alerts = json.loads((Path(recipe.run_dir) / "pretrain" / "alerts.json").read_text())
    memorized = [a for a in alerts if a["type"] == "memorization"]
    assert memorized and all(a["loss"] < 0.20 for a in memorized)
    assert memorized[0]["prompt"].startswith("Shall I compare")
    assert "Thou art more lovely and more temperate" in memorized[0]["train_span"]
    assert memorized[0]["words"] >= 8


def test_rising_validation_loss_raises_the_overfitting_alert_and_can_stop(tmp_path, data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:6000]
    small = tmp_path / "small.txt"
    small.write_text(text, encoding="utf-8")
    recipe = tiny_recipe(tmp_path / "run", f"data.path={small}", "data.validation_fraction=0.3",
                         "tokenizer.vocab_size=400", "pretrain.max_steps=400", "pretrain.eval_steps=10",
                         "pretrain.logging_steps=5", "monitor.sample_every=1000", "monitor.patience=3",
                         "monitor.stop_on_overfit=true")
    result = run_stage("pretrain", recipe)
    assert result.status == "stopped" and "overfitting" in result.reason
    assert result.metrics["overfitting_alerts"] == 1 and result.metrics["global_step"] < 400
    alert = json.loads((Path(recipe.run_dir) / "pretrain" / "alerts.json").read_text())[0]
    evals, trains = alert["eval_losses"], alert["train_losses"]
    assert all(b > a for a, b in zip(evals, evals[1:])) and trains[-1] < trains[0]
