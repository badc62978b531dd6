"""Bad input anywhere: a bad value in every section of a recipe and in every command's options gets exit code 2 and
one line naming the key, option or file, before any data is read or any model built, and nothing on disk changes."""

import pytest
from conftest import DEFAULT_RECIPE, calls_to, expensive_work, tree

from hf_ladder import cli

RECIPE_VALUES = [  # (override, what the message names): one or more per section, the runtime-only rejections too
    ("name=[a, b]", "name: expected a string"),
    ("seed=-1", "seed: must be >= 0"),
    ("run_dir=[a]", "run_dir: expected a path string"),
    ("pretrainn.max_steps=3", "did you mean 'pretrain'"),
    ("data.block_size=4", "data.block_size: must be >= 8"),
    ("data.validation_fraction=1.5", "data.validation_fraction: must be < 1"),
    ("data.validation_plays=[hamlett]", "did you mean 'hamlet'"),
    ("tokenizer.min_frequency=0", "tokenizer.min_frequency: must be >= 1"),
    ("model.n_layr=2", "did you mean 'n_layer'"),
    ("model.n_embd=many", "model.n_embd: expected int"),
    ("monitor.halt_patience=0", "monitor.halt_patience: must be >= 1"),
    ("monitor.prompts=[]", "monitor.prompts: must have at least 1"),
    ("monitor.generation.max_new_tokens=0", "monitor.generation.max_new_tokens: must be >= 1"),
    ("pretrain.gradient_accumulation_steps=0", "pretrain.gradient_accumulation_steps: must be >= 1"),
    ("pretrain.lr_scheduler_type=cosin", "TrainingArguments rejects these values: cosin"),
    ("pretrain.max_steps=0", "pretrain: set max_steps > 0"),
    ("pretrain.output_dir=/tmp/x", "pretrain.output_dir: set by hf-ladder"),
    ("sft.max_length=0", "sft.max_length: must be >= 1"),
    ("sft.test_split_size=1.5", "sft.test_split_size: must be < 1"),
    ("sft.dataset_nam=x", "did you mean 'dataset_name'"),
    ("sft.push_to_hub=true", "sft.push_to_hub: set sft.hub_model_id"),
    ("dpo.beta=-0.1", "dpo.beta: must be > 0"),
    ("dpo.rejected_source=mine", "dpo.rejected_source: expected one of 'other_scene', 'own_sample'"),
    ("dpo.hub_token=hf_abc", "dpo.hub_token: not accepted"),
    ("dpo.trust_remote_code=true", "dpo.trust_remote_code: not accepted"),
    ("sft.model_init_kwargs={trust_remote_code: true}", "sft.model_init_kwargs: not accepted"),
    ("lora.r=0", "lora.r: must be >= 1"),  # peft itself raises only inside get_peft_model
    ("lora.lora_dropout=1", "lora.lora_dropout: must be < 1"),
    ("lora.target_play=hamlett", "lora.target_play: unknown play 'hamlett'"),
    ("lora.hub_model_id=not a repo", "lora.hub_model_id"),
    ("quantize.variants={a: {load_in_4bit: true, load_in_3bit: true}}", "variants.a.load_in_3bit: unknown key"),
    ("quantize.variants={a: {bnb_4bit_quant_type: nf4}}", "quantize.variants.a: set load_in_8bit"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1"),
    ("eval.tasks=[mmlu_6shot]", "did you mean 'mmlu_5shot'"),
    ("eval.limit={wikitext: -1}", "eval.limit: must be >= 1"),
    ("eval.generation.top_k=-1", "eval.generation.top_k: must be >= 0"),
]


def cli_run(argv, capsys, tmp_path) -> tuple[int, str]:
    """cli.main(argv) with nothing expensive called and nothing under tmp_path changed: (exit code, stderr)."""
    before = tree(tmp_path)
    with calls_to(*expensive_work()) as seen:
        code = cli.main(argv)
    err = capsys.readouterr().err
    assert seen == [], f"{argv}: {seen} ran before the error"
    assert tree(tmp_path) == before, f"{argv}: files changed"
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("override, named", RECIPE_VALUES)
def test_a_bad_recipe_value_is_named_before_anything_runs(override, named, tmp_path, capsys):
    code, err = cli_run(["run", "pretrain", str(DEFAULT_RECIPE), f"run_dir={tmp_path / 'run'}", override], capsys,
                        tmp_path)
    assert code == 2 and named in err, err
    assert err.startswith("error: ") and err.count("\n  - ") == 1  # one problem, one line


def test_overrides_may_follow_the_options(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, err = cli_run(["eval", str(DEFAULT_RECIPE), "--tasks", "heldout", f"run_dir={run_dir}", "eval.limit=2"],
                        capsys, tmp_path)
    assert code == 2 and "no finished stage to evaluate" in err and str(run_dir) in err  # the override reached it


OPTIONS = [  # (argv after the command, what the message names)
    (["run", "pretrian", "{recipe}"], "unknown stage 'pretrian'"),
    (["run", "pretrain", "no-such-recipe"], "no such recipe file"),
    (["run", "pretrain", "{recipe}", "pretrain.max_steps"], "not of the form key=value"),
    (["run", "pretrain"], "the following arguments are required: recipe"),
    (["ladder", "{recipe}", "--force", "sftt"], "--force sftt: not a stage of this ladder"),
    (["eval", "{recipe}", "--limit", "0"], "--limit: must be >= 1, got 0"),
    (["eval", "{recipe}", "--limit", "many"], "argument --limit: invalid int value"),
    (["eval", "{recipe}", "--tasks", "hellaswagg"], "--tasks: unknown task(s) hellaswagg"),
    (["eval", "{recipe}", "--data-dir", "{tmp}/nowhere"], "--data-dir: {tmp}/nowhere is not a folder"),
    (["eval", "{recipe}", "--backend", "lm-eval", "--include-path", "{tmp}/nowhere"], "--include-path"),
    (["eval", "{recipe}", "--include-path", "{tmp}"], "--include-path: only with --backend lm-eval"),
    (["eval", "{recipe}", "--baseline", "./no-such-model"],
     "--baseline: ./no-such-model is not a model folder or a .gguf file"),
    (["eval", "{recipe}", "--backend", "vllm"], "argument --backend: invalid choice"),
    (["report", "{tmp}/nowhere"], "no such recipe file"),
    (["report", "{recipe}", "run_dir={tmp}/run"], "unrecognized arguments"),
    (["report", "{tmp}"], "not a run directory"),
    (["push", "{tmp}/nowhere", "me/model"], "not a stage of a run"),
    (["push", "{tmp}", "not a repo id"], "not a repo id"),
    (["generate", "{tmp}/nowhere", "--prompt", "Hi"], "not a model folder"),
    (["generate", "{tmp}", "--prompt", "Hi", "--top-p", "2"], "--top-p: must be <= 1.0, got 2.0"),
    (["generate", "{tmp}", "--prompt", "Hi", "--temperature", "-1"], "--temperature: must be >= 0.0, got -1.0"),
    (["generate", "{tmp}", "--prompt", "Hi", "--top-k", "-1"], "--top-k: must be >= 0, got -1"),
    (["generate", "{tmp}", "--prompt", "Hi", "--max-new-tokens", "0"], "--max-new-tokens: must be >= 1, got 0"),
    (["generate", "{tmp}"], "the following arguments are required: --prompt"),
    (["recipes", "copy", "shakespeare-tinny"], "did you mean 'shakespeare-tiny'"),
    (["recipes", "copy"], "name the built-in recipe"),
    (["recipes", "copy", "shakespeare-tiny", "{tmp}/mine.yaml"], "already exists; pass --force"),
    (["recipes", "frobnicate"], "argument action: invalid choice"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, named", OPTIONS, ids=[" ".join(a[:3]) for a, _ in OPTIONS])
def test_a_bad_option_is_named_before_anything_runs(argv, named, tmp_path, capsys):
    (tmp_path / "mine.yaml").write_text("# my recipe\n")  # an existing file `recipes copy` must not overwrite
    fill = {"{recipe}": str(DEFAULT_RECIPE), "{tmp}": str(tmp_path)}
    argv = [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in argv]
    named = named.replace("{tmp}", str(tmp_path))
    code, err = cli_run(argv, capsys, tmp_path)
    assert code == 2 and named in err, err
