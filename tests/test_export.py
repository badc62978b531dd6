"""`hf-ladder export --to gguf`: two rungs of a tiny run converted by llama.cpp's converter and run in llama.cpp
itself (the `llama_cpp` runtime `make gguf-tools` builds): same tokens, same greedy decoding as transformers."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_recipe

from hf_ladder import cli
from hf_ladder.data.chat import end_of_turn_ids, render_prompt
from hf_ladder.export import export_gguf, rung_model
from hf_ladder.ladder import run_stage
from hf_ladder.modeling import load_model, load_tokenizer
from hf_ladder.schema import RecipeError

NEW_TOKENS = 32
LOGPROB_TOLERANCE = 5e-3  # f16: max |log p| difference over the top-10 first tokens, nats (measured 1e-3, 3e-4)
PLAIN = ["ROMEO:\nWhat light through", "KING HENRY V:\nOnce more unto the", "First Citizen:\nWe are"]
ASKED = ["How now, my lord?", "What news from Rome?", "Wilt thou be gone?"]


def llama_cpp():
    """The llama.cpp runtime; skipped where `make gguf-tools` has not built it, except in CI (`CI` set)."""
    try:
        import llama_cpp
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama_cpp is not installed; in CI, `make test` builds it (make gguf-tools)")
        pytest.skip("llama_cpp is not installed (make gguf-tools)")
    return llama_cpp


def load_gguf(path: Path):
    """`llama_cpp.Llama` on a GGUF without the CPU's extra buffer types (llama.cpp's `--no-repack`; the Python API
    has no argument for it, so its default model parameters are changed for this one load): llama.cpp 0.3.36's AMX
    kernel (`ggml_backend_amx_mul_mat`) segfaults on Q8_0 matrices this small on CPUs with AMX (this one). F16 is
    not repacked either way."""
    runtime = llama_cpp()
    default = runtime.llama_cpp.llama_model_default_params

    def no_repack():
        params = default()
        params.use_extra_bufts = False
        return params

    runtime.llama_cpp.llama_model_default_params = no_repack
    try:
        return runtime.Llama(model_path=str(path), n_ctx=0, n_threads=2, logits_all=True, seed=0, verbose=False)
    finally:
        runtime.llama_cpp.llama_model_default_params = default


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny pretrained model and its SFT rung on the embedded plays; the SFT section's `export:` writes a q8_0
    GGUF when the stage finishes."""
    recipe = tiny_recipe(tmp_path_factory.mktemp("export"), "model.n_positions=128", "data.block_size=128",
                         "pretrain.max_steps=300", "pretrain.learning_rate=5e-3", "sft.max_steps=40",
                         "sft.max_length=128", "sft.max_train_samples=640", "sft.max_eval_samples=20", "sft.bf16=false",
                         "monitor.sample_every=50", "sft.export={to: gguf, outtype: q8_0}")
    for stage in ("pretrain", "sft"):
        assert run_stage(stage, recipe).status == "finished"
    return recipe


def greedy_in_both(gguf, model_dir, prompts: list[str], weights: torch.dtype = torch.float16) -> list[dict]:
    """Per prompt: ids from our tokenizer and from llama.cpp's, up to NEW_TOKENS greedy ids (the end token included,
    where both runtimes stop) from transformers (its weights rounded to `weights`, the GGUF's type, computed in
    float32) and from llama.cpp, and the log-probabilities of the first new token in both."""
    Llama = llama_cpp().Llama
    llm = load_gguf(gguf)
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    ends = set(end_of_turn_ids(tokenizer))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(weights).float())
    try:
        out = []
        for prompt in prompts:
            ids = tokenizer(prompt)["input_ids"]  # bos + the prompt
            seq = torch.tensor([ids])  # (1, T): greedy by argmax over transformers' logits, past any end token
            with torch.no_grad():
                first = torch.log_softmax(model(seq).logits[0, -1].float(), -1).numpy()
                for _ in range(NEW_TOKENS):
                    seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
                    if int(seq[0, -1]) in ends:
                        break
            theirs = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            llm.reset()
            llm.eval(theirs)
            their_first = Llama.logits_to_logprobs(llm._scores[-1, :])
            generated = []
            for token in llm.generate(theirs, temp=0.0, top_k=1, repeat_penalty=1.0, reset=False):
                generated.append(int(token))
                if len(generated) == NEW_TOKENS or token in ends:
                    break
            out.append({"ids": ids, "their_ids": theirs, "greedy": seq[0, len(ids):].tolist(),
                        "their_greedy": generated, "first": first, "their_first": np.asarray(their_first)})
        return out
    finally:
        llm.close()  # its __del__ would raise at interpreter shutdown


def top_logprob_gap(row: dict, k: int = 10) -> float:
    top = np.argsort(-row["first"])[:k]
    return float(np.max(np.abs(row["first"][top] - row["their_first"][top])))


@pytest.mark.parametrize("stage", ["pretrain", "sft"])
def test_llama_cpp_generates_the_same_greedy_tokens_as_transformers(run, stage, capsys):
    llama_cpp()
    stage_dir = Path(run.run_dir) / stage
    assert cli.main(["export", str(stage_dir), "--to", "gguf"]) == 0
    printed = capsys.readouterr().out
    (gguf,) = (stage_dir / "gguf").glob("*-f16.gguf")
    assert f"wrote {gguf}" in printed and "ollama create" in printed and "MB)" in printed
    modelfile = gguf.with_suffix(".Modelfile").read_text()
    assert f"FROM ./{gguf.name}" in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile
    model_dir = rung_model(stage_dir)
    tokenizer = load_tokenizer(model_dir)
    if stage == "sft":  # a chat rung: ChatML in Ollama's syntax, and its end-of-turn stop; exported once it finished
        assert sorted(p.name.rsplit("-", 1)[-1] for p in (stage_dir / "gguf").glob("*.gguf")) == ["f16.gguf",
                                                                                                   "q8_0.gguf"]
        assert "<|im_start|>assistant" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
        prompts = [render_prompt(tokenizer, [{"role": "user", "content": q}]) for q in ASKED]
    else:
        assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile
        prompts = PLAIN
    rows = greedy_in_both(gguf, model_dir, prompts)
    for prompt, row in zip(prompts, rows):
        assert row["their_ids"] == row["ids"], prompt  # the same tokenizer: bos, merges, chat markers
        assert row["their_greedy"] == row["greedy"], prompt
        assert len(row["greedy"]) >= 4
        assert top_logprob_gap(row) < LOGPROB_TOLERANCE, prompt
    print(f"{stage} f16: {len(rows)} prompts, greedy tokens equal; first-token top-10 log-prob gap "
          f"{max(top_logprob_gap(r) for r in rows):.4f} nats")
    if stage == "pretrain":  # the prompts matter: not one loop for all (the tiny SFT rung may answer all alike)
        assert len({tuple(r["greedy"]) for r in rows}) > 1


def test_q8_0_is_smaller_and_close_and_quantized_rungs_point_to_it(run, tmp_path):
    llama_cpp()
    stage_dir = Path(run.run_dir) / "pretrain"
    f16 = export_gguf(stage_dir, "f16", tmp_path / "f16.gguf")
    q8 = export_gguf(stage_dir, "q8_0", tmp_path / "q8.gguf")
    assert q8.size_bytes < 0.75 * f16.size_bytes
    rows = greedy_in_both(q8.gguf, rung_model(stage_dir), PLAIN, weights=torch.float32)  # against the fp32 rung
    agree = sum(a == b for r in rows for a, b in zip(r["greedy"], r["their_greedy"])) / (NEW_TOKENS * len(rows))
    gap = max(top_logprob_gap(r) for r in rows)
    print(f"q8_0: {q8.size_bytes:,} bytes (f16 {f16.size_bytes:,}); greedy tokens equal {agree:.0%}; "
          f"first-token top-10 log-prob gap {gap:.4f} nats")
    assert rows[0]["their_ids"] == rows[0]["ids"] and agree >= 0.8 and gap < 0.25 and math.isfinite(gap)
    with pytest.raises(RecipeError, match="exists; add --force"):
        export_gguf(stage_dir, "f16", tmp_path / "f16.gguf")
    fake = tmp_path / "quantize" / "int8" / "model"
    fake.mkdir(parents=True)
    (fake / "config.json").write_text('{"quantization_config": {"quant_method": "bitsandbytes"}}')
    with pytest.raises(RecipeError, match="no GGUF form.*--outtype q8_0"):
        export_gguf(fake.parent)
