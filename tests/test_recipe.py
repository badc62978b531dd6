"""Recipes fail early and clearly: unknown keys get the closest valid name, before any data or model."""

import glob

import pytest
import yaml
from conftest import DEFAULT_RECIPE, ROOT, calls_to, expensive_work

from hf_ladder import cli
from hf_ladder.recipe import load_recipe
from hf_ladder.schema import RecipeError


def test_every_shipped_recipe_validates(capsys):
    recipes = sorted(glob.glob(str(ROOT / "recipes" / "*.yaml")))
    assert len(recipes) >= 3
    assert cli.main(["validate", *recipes]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == len(recipes)


def test_accelerate_configs_validate_with_accelerates_own_loader(tmp_path, capsys):
    configs = sorted(glob.glob(str(ROOT / "recipes" / "accelerate" / "*.yaml")))
    assert len(configs) == 5 and cli.main(["validate", *configs]) == 0  # ddp, fsdp, deepspeed_zero2/3, multinode
    assert capsys.readouterr().out.count("accelerate config") == 5
    bad = tmp_path / "ddp.yaml"
    bad.write_text((ROOT / "recipes" / "accelerate" / "ddp.yaml").read_text() + "num_proceses: 4\n")
    assert cli.main(["validate", str(bad)]) == 1
    assert "num_proceses" in capsys.readouterr().err


def test_misspelled_key_fails_in_validate_naming_the_right_key(tmp_path, capsys):
    raw = yaml.safe_load(DEFAULT_RECIPE.read_text())
    raw["pretrain"]["learning_rat"] = raw["pretrain"].pop("learning_rate")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "pretrain.learning_rat" in err and "did you mean 'learning_rate'" in err


def test_misspelled_override_fails_before_any_data_or_model(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with calls_to(*expensive_work()) as seen:  # by code object: holds whatever imported these first
        code = cli.main(["run", "pretrain", str(DEFAULT_RECIPE), "pretrain.learning_rat=1e-3", f"run_dir={run_dir}"])
    assert code == 2 and seen == []
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    assert not run_dir.exists()
    from hf_ladder.stages import pretrain  # the recorder sees a call through the name the stage imported

    with calls_to(*expensive_work()) as seen:
        pretrain.load_corpus(load_recipe(DEFAULT_RECIPE).data)
    assert seen[0] == "load_corpus"


@pytest.mark.parametrize("override, message", [
    ("pretrain.max_steps=many", "pretrain.max_steps: expected int"),
    ("data.block_size=wide", "data.block_size: expected int"),
    ("pretrain.learning_rate=-1", "pretrain.learning_rate: must be > 0"),
    ("pretrain.output_dir=/tmp/x", "pretrain.output_dir: set by hf-ladder"),
    ("pretrian.max_steps=3", "did you mean 'pretrain'"),
    ("monitor.halt_below=150", "monitor.halt_below: must be <= 100"),
    ("monitor.sample_evry=10", "did you mean 'sample_every'"),
    ("monitor.generation.top_p=0", "monitor.generation.top_p"),
    ("data.block_size=512", "data.block_size: 512 is above the model's context"),
    ("data.validation_plays=[macbth]", "did you mean 'macbeth'"),
    ("model.n_head=3", "not divisible"),
    ("model.n_layr=3", "did you mean 'n_layer'"),
    ("model.vocab_size=100", "set by hf-ladder from the tokenizer"),
    ("model.model_type=gtp2", "unknown causal-LM model type 'gtp2'; did you mean 'gpt2'"),
    ("tokenizer.vocab_size=100", "tokenizer.vocab_size"),
])
def test_bad_values_name_their_key(override, message):
    with pytest.raises(RecipeError) as e:
        load_recipe(DEFAULT_RECIPE, [override])
    assert message in str(e.value)
    assert str(DEFAULT_RECIPE) in str(e.value)


def test_all_problems_are_reported_together():
    with pytest.raises(RecipeError) as e:
        load_recipe(DEFAULT_RECIPE, ["pretrain.learning_rat=1", "monitor.halt_patience=0", "seed=-3"])
    text = str(e.value)
    assert "3 problem(s)" in text
    assert "learning_rate" in text and "monitor.halt_patience" in text and "seed" in text


def test_overrides_are_typed_and_nested(tmp_path):
    r = load_recipe(DEFAULT_RECIPE, ["pretrain.max_steps=40", "pretrain.learning_rate=3e-4", f"run_dir={tmp_path}",
                                     "monitor.generation.top_k=5",
                                     "data.path=../shared/data/tinyshakespeare/input.txt"])
    assert r.stages["pretrain"]["args"]["max_steps"] == 40  # split per library config: TrainingArguments keys
    assert r.stages["pretrain"]["args"]["learning_rate"] == pytest.approx(3e-4)  # YAML reads 3e-4 as a string
    assert r.run_dir == str(tmp_path)
    assert r.monitor.generation.top_k == 5
    assert r.data.path.endswith("input.txt")


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(RecipeError, match="key=value"):
        load_recipe(DEFAULT_RECIPE, ["pretrain.max_steps"])


def test_model_context_defaults_to_block_size(tmp_path):
    raw = yaml.safe_load(DEFAULT_RECIPE.read_text())
    del raw["model"]["n_positions"]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_recipe(path, ["data.block_size=96"]).model["n_positions"] == 96


@pytest.mark.parametrize("native", [True, False])
def test_precision_follows_the_hardware_unless_the_recipe_says(native, monkeypatch, capsys):
    """The default recipe names no `bf16` and no `eval.baseline_dtype`: every training stage autocasts to bf16, and
    the baselines are scored in bfloat16, exactly where the device has bf16 natively (on an AVX2 CPU bf16 matmuls
    run ~50x slower than fp32); an explicit key wins, and `bf16: true` on a CPU without it says so."""
    from hf_ladder.eval import suite
    from hf_ladder.stages import common
    monkeypatch.setattr(common, "native_bf16", lambda: native)
    monkeypatch.setattr(suite, "native_bf16", lambda: native)
    recipe = load_recipe(DEFAULT_RECIPE)
    trained = [name for name, section in recipe.stages.items() if "args" in section]
    assert trained == ["pretrain", "sft", "dpo", "lora"]
    assert all(common.training_defaults(recipe.stages[s]["args"], recipe)["bf16"] is native for s in trained)
    assert "warning" not in capsys.readouterr().out
    forced = load_recipe(DEFAULT_RECIPE, ["pretrain.bf16=true", "sft.bf16=false", "dpo.fp16=true"])
    assert common.training_defaults(forced.stages["pretrain"]["args"], forced)["bf16"] is True
    assert common.training_defaults(forced.stages["sft"]["args"], forced)["bf16"] is False
    assert common.training_defaults(forced.stages["dpo"]["args"], forced)["bf16"] is False  # fp16 asked instead
    warned = capsys.readouterr().out
    assert ("bf16: true on a CPU without native bf16" in warned) is (not native and common.device() == "cpu")
    assert suite.baseline_dtype(recipe.eval) == ("bfloat16" if native else "float32")
    assert suite.baseline_dtype(load_recipe(DEFAULT_RECIPE, ["eval.baseline_dtype=float32"]).eval) == "float32"
