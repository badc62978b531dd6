"""LoRA specialization and bitsandbytes quantization on a tiny model trained on the embedded plays."""

import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from conftest import tiny_recipe
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_ladder.data.corpus import load_play
from hf_ladder.ladder import run_stage
from hf_ladder.runs import Run
from hf_ladder.stages import quantize

LORA = ["lora.target_play=macbeth", "lora.r=2", "lora.lora_alpha=8", "lora.max_steps=60", "lora.bf16=false",
        "lora.learning_rate=5e-3", "monitor.sample_every=30", "monitor.generation.max_new_tokens=24"]
VARIANTS = ('quantize.variants={int8: {load_in_8bit: true}, nf4: {load_in_4bit: true, bnb_4bit_quant_type: nf4, '
            'bnb_4bit_compute_dtype: float32}, fp4: {load_in_4bit: true, bnb_4bit_quant_type: fp4}}')


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lq")
    r = tiny_recipe(run_dir, "pretrain.max_steps=150", "pretrain.learning_rate=5e-3", *LORA, VARIANTS)
    assert run_stage("pretrain", r).status == "finished"
    return r


@pytest.fixture(scope="module")
def lora(recipe):
    return run_stage("lora", recipe)


def test_lora_trains_few_parameters_and_specializes(lora):
    m = lora.metrics
    assert lora.status == "finished" and lora.inputs["base_model"].endswith("pretrain/model")
    assert lora.inputs["qlora"] is False
    assert 0 < m["trainable_percent"] <= 2.0 and m["trainable_parameters"] < 0.02 * m["total_parameters"]
    assert m["target_perplexity_after"] < m["target_perplexity_before"]  # Macbeth's held-out scenes
    assert {"other_perplexity_before", "other_perplexity_after"} <= set(m)  # forgetting, on The Tempest
    adapter = json.loads((Path(lora.inputs["adapter_dir"]) / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and set(adapter["target_modules"]) == {"c_attn", "c_proj", "c_fc"}
    assert adapter["fan_in_fan_out"] is True


def test_merged_model_equals_the_adapter_model(lora, recipe):
    base_dir = Run(recipe).finished("pretrain").model_dir
    tok = AutoTokenizer.from_pretrained(lora.model_dir)
    ids = tok(load_play("macbeth").text()[:400], return_tensors="pt")["input_ids"][:, :64]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), lora.inputs["adapter_dir"])
    merged = AutoModelForCausalLM.from_pretrained(lora.model_dir)
    with torch.no_grad():
        a, b = adapted.eval()(ids).logits, merged.eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(base_dir).eval()(ids).logits
    assert (a - b).abs().max().item() <= 1e-4
    assert (a - base).abs().max().item() > 1e-2  # and the adapter did change the model
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_qlora_trains_on_a_4bit_base(recipe, tmp_path):
    qlora = tiny_recipe(tmp_path, *LORA, "lora.max_steps=10", "lora.load_in_4bit=true",
                        "lora.bnb_4bit_quant_type=nf4", "lora.bnb_4bit_compute_dtype=float32",
                        f"lora.model_name_or_path={Run(recipe).finished('pretrain').model_dir}")
    result = run_stage("lora", qlora)
    assert result.status == "finished" and result.inputs["qlora"] is True
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir)  # merged into the full-precision base
    assert type(merged.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert result.metrics["trainable_percent"] <= 2.0


@pytest.fixture(scope="module")
def quantized(lora, recipe):
    return run_stage("quantize", recipe)


def test_quantized_checkpoints_reload_with_plain_from_pretrained_and_generate(quantized):
    tok = None
    for name, layer in (("int8", "Linear8bitLt"), ("nf4", "Linear4bit")):
        folder = quantized.inputs["variants"][name]
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = tok or AutoTokenizer.from_pretrained(folder)
        assert type(model.transformer.h[0].attn.c_attn).__name__ == layer
        enc = tok("MACBETH:\n", return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
        assert out.shape[1] > enc["input_ids"].shape[1]
        assert list(Path(folder).glob("*.safetensors"))


def test_quantized_linear_layers_are_measured_smaller(quantized):
    m = quantized.metrics
    assert m["int8_linear_bytes"] < 0.5 * m["fp32_linear_bytes"]
    assert m["nf4_linear_bytes"] < 0.35 * m["fp32_linear_bytes"]
    assert m["nf4_disk_bytes"] < m["int8_disk_bytes"] < m["fp32_disk_bytes"]
    for name in ("int8", "nf4", "fp4"):
        assert f"{name}_perplexity_change" in m and abs(m[f"{name}_perplexity_change"]) < 0.5
        assert m[f"{name}_tokens_per_second"] > 0
    stage = Path(quantized.model_dir).parents[1]
    assert json.loads((stage / "metrics.json").read_text())["nf4_perplexity_change"] == m["nf4_perplexity_change"]
    rows = [json.loads(line) for line in (stage / "samples.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"fp32", "int8", "nf4", "fp4"}


def test_a_variant_the_device_cannot_run_is_skipped_not_invented(lora, recipe, tmp_path):
    real = quantize.load_model

    def no_fp4(path, *args, **kwargs):
        q = kwargs.get("quantization_config")
        if q is not None and getattr(q, "bnb_4bit_quant_type", None) == "fp4" and q.load_in_4bit:
            raise NotImplementedError("no fp4 kernel on this device")
        return real(path, *args, **kwargs)

    variants = {"int8": {"load_in_8bit": True}, "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}}
    with mock.patch.object(quantize, "load_model", side_effect=no_fp4):
        metrics, _, saved, skipped = quantize.quantize_and_measure(lora.model_dir, variants, recipe, tmp_path)
    assert set(saved) == {"int8"} and "no fp4 kernel" in skipped["fp4"]
    assert not any(k.startswith("fp4_") for k in metrics)
