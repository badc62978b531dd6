"""Hard to break: a nan or inf loss, or a nan gradient norm, stops the stage and keeps the last good checkpoint;
files are replaced whole or not at all; bad SFT data is named before any model is built; only safetensors weights
are read and remote code never runs."""

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import assert_stopped_at_30_keeping_checkpoint_20, poisoned_loss, tiny_recipe
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, Trainer

from hf_ladder import runs
from hf_ladder.data.corpus import DataError
from hf_ladder.ladder import run_stage
from hf_ladder.runs import TrainingError
from hf_ladder.schema import DatasetArgs

DIVERGING = ["pretrain.max_steps=60", "pretrain.save_steps=10", "pretrain.logging_steps=10", "pretrain.eval_steps=100",
             "monitor.sample_every=100"]


# nan from step 26 on; inf at step 30 only (from then on the weights are nan, and so is every later loss)
@pytest.mark.parametrize("value, from_step, what", [(float("nan"), 25, "loss nan"), (float("inf"), 29, "loss inf")])
def test_a_nan_or_inf_loss_stops_the_stage_and_keeps_the_last_good_checkpoint(value, from_step, what, tmp_path):
    recipe = tiny_recipe(tmp_path, *DIVERGING)
    poison = poisoned_loss(value, from_step)
    with mock.patch.object(Trainer, "compute_loss", poison), pytest.raises(TrainingError) as error:
        run_stage("pretrain", recipe)
    assert_stopped_at_30_keeping_checkpoint_20(error, tmp_path / "pretrain", what)


def test_a_nan_gradient_norm_with_a_finite_loss_stops_the_stage(tmp_path):
    """The gradient norm alone goes nan (the loss stays finite): the stage stops on it too."""
    recipe = tiny_recipe(tmp_path, *DIVERGING)
    real = Trainer._clip_grad_norm

    def nan_norm(self, model):  # the gradients themselves stay as they are
        norm = real(self, model)
        return norm * float("nan") if self.state.global_step >= 25 else norm

    with mock.patch.object(Trainer, "_clip_grad_norm", nan_norm), pytest.raises(TrainingError) as error:
        run_stage("pretrain", recipe)
    assert "loss nan" not in str(error.value)
    assert_stopped_at_30_keeping_checkpoint_20(error, tmp_path / "pretrain", "grad_norm nan")
    history = json.loads((tmp_path / "pretrain" / "checkpoints" / "checkpoint-20" / "trainer_state.json").read_text())
    assert all(h["loss"] == h["loss"] for h in history["log_history"] if "loss" in h)  # finite before it


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
    """Every model hf_ladder loads goes through modeling.load_model (checked below); a folder with only pickled
    weights is refused there."""
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


def calls(name: str):
    """(file, line, call) of every call to a function or method called `name` in the package."""
    import ast

    from conftest import ROOT

    for path in sorted((ROOT / "hf_ladder").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == name:
                yield path.relative_to(ROOT), node.lineno, node


def test_every_model_load_is_safetensors_only_and_no_remote_code():
    """The package loads model weights in one place: only modeling.load_model calls a model class's from_pretrained
    (tokenizers, peft adapters and GGUF files excepted: no pickled weights there; a GGUF is read by the `gguf`
    package into a safetensors folder that load_model then loads), with use_safetensors=True; and no call
    anywhere passes trust_remote_code other than False."""
    gguf = {(f, line) for f, line, node in calls("from_pretrained") if any(k.arg == "gguf_file" for k in node.keywords)}
    assert {f for f, _ in gguf} == {Path("hf_ladder/modeling.py")}  # dequantized_folder: the model, its tokenizer
    loads = [(f, line, node) for f, line, node in calls("from_pretrained") if (f, line) not in gguf
             and getattr(getattr(node.func, "value", None), "id", "") not in ("AutoTokenizer", "PeftModel")]
    assert [(f, line) for f, line, _ in loads] == [(Path("hf_ladder/modeling.py"), loads[0][1])]  # in load_model
    node = loads[0][2]
    keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
    assert keywords["use_safetensors"] is True and keywords["trust_remote_code"] is False
    remote = [(f, line) for name in ("from_pretrained", "load_model", "load_dataset", "HFLM") for f, line, node
              in calls(name) for k in node.keywords if k.arg == "trust_remote_code" and getattr(k.value, "value", 1)]
    assert remote == []
