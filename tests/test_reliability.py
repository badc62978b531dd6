"""Hard to break: a nan loss stops the stage and keeps the last good checkpoint, files are replaced whole or not
at all, bad SFT data is named before any model is built, and only safetensors weights are read."""

import json
import re
from unittest import mock

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, Trainer

from hf_ladder import runs
from hf_ladder.data.corpus import DataError
from hf_ladder.ladder import run_stage
from hf_ladder.runs import TrainingError
from hf_ladder.schema import DatasetArgs


def test_a_nan_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = tiny_recipe(tmp_path, "pretrain.max_steps=60", "pretrain.save_steps=10", "pretrain.logging_steps=10",
                         "pretrain.eval_steps=100", "monitor.sample_every=100")
    real = Trainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):  # from optimizer step 26 on, the loss is nan
        out = real(self, model, inputs, *args, **kwargs)
        if self.state.global_step < 25:
            return out
        return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")

    with mock.patch.object(Trainer, "compute_loss", poisoned), pytest.raises(TrainingError) as error:
        run_stage("pretrain", recipe)
    message = str(error.value)
    assert re.search(r"loss nan.* at step 30", message) and "checkpoint-20" in message
    checkpoints = tmp_path / "pretrain" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    weights = load_file(checkpoints / "checkpoint-20" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())  # the last good one, intact
    assert not (tmp_path / "pretrain" / "model").exists() and not (tmp_path / "manifest.json").exists()


def test_run_files_are_replaced_whole_or_not_at_all(tmp_path):
    path = tmp_path / "manifest.json"
    runs.write_json(path, {"stages": {"pretrain": {"status": "finished"}}})
    with mock.patch.object(runs.os, "replace", side_effect=OSError("disk full")), pytest.raises(OSError):
        runs.write_json(path, {"stages": {}})
    assert json.loads(path.read_text()) == {"stages": {"pretrain": {"status": "finished"}}}


def test_a_model_folder_is_swapped_in_whole(tmp_path):
    from conftest import DATA
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DATA / "gpt2-tokenizer")
    first = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=16, vocab_size=len(tok)))
    runs.save_model(first, tok, tmp_path / "model")
    second = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=16, vocab_size=len(tok)))
    with mock.patch.object(second, "save_pretrained", side_effect=OSError("killed while saving")):
        with pytest.raises(OSError):
            runs.save_model(second, tok, tmp_path / "model")
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert torch.equal(saved["transformer.wte.weight"], first.state_dict()["transformer.wte.weight"])
    assert "model" in {p.name for p in tmp_path.iterdir()}


def test_sft_data_without_the_needed_columns_is_named_before_any_model(tmp_path):
    from hf_ladder.data.sft import load_sft_data

    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "Who?", "reply": "Me."}\n' * 5)
    with pytest.raises(DataError, match=r"rows\.jsonl"):
        load_sft_data(DatasetArgs(dataset_name=str(path)), ["macbeth"], seed=0)


def test_only_safetensors_weights_are_read(tmp_path):
    from conftest import DATA
    from transformers import AutoTokenizer

    from hf_ladder.modeling import load_model

    tok = AutoTokenizer.from_pretrained(DATA / "gpt2-tokenizer")
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=8, n_positions=16, vocab_size=len(tok)))
    model.config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # pickled weights only
    with pytest.raises(OSError, match="safetensors"):
        load_model(tmp_path)
