"""The pretrain stage end to end on the embedded corpus: learning, the run directory, reloading, resuming."""

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DEFAULT_RECIPE, TINY, tiny_recipe
from safetensors.torch import load_file

from hf_ladder import cli
from hf_ladder.data.corpus import load_corpus
from hf_ladder.ladder import run_stage

STEPS = 120


HEALTHY = [f"pretrain.max_steps={STEPS}", "monitor.sample_every=20", "pretrain.warmup_steps=10",
           "pretrain.learning_rate=3e-3"]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("healthy")
    recipe = tiny_recipe(run_dir, *HEALTHY)
    return recipe, run_stage("pretrain", recipe)


def test_a_healthy_tiny_run_learns_and_does_not_halt(healthy):
    recipe, result = healthy
    assert result.status == "finished" and result.reason is None
    m = result.metrics
    assert m["global_step"] == STEPS and m["halted"] == 0
    assert m["val_loss"] < math.log(2048) - 1.5  # far below a uniform guess over the vocabulary
    evals = [h["eval_loss"] for h in json.loads((Path(recipe.run_dir) / "pretrain" / "log_history.json")
                                                .read_text()) if "eval_loss" in h]
    assert len(evals) == STEPS // 20 and evals[-1] < evals[0] - 0.2
    assert 0 < m["val_bits_per_byte"] <= m["val_bits_per_char"] < 4.5
    # bits per character is the same nats, per character: a tokenizer-independent figure
    chars = m["val_tokens"] * m["val_loss"] / (m["val_bits_per_char"] * math.log(2))
    assert chars == pytest.approx(len(load_corpus(recipe.data).validation_text), rel=1e-6)
    assert m["tokens_per_second"] > 0 and m["wall_time_s"] > 0
    assert m["memorization_alerts"] == m["overfitting_alerts"] == 0  # a healthy run raises no alert
    assert json.loads((Path(recipe.run_dir) / "pretrain" / "alerts.json").read_text()) == []


def test_run_directory_layout(healthy):
    recipe, result = healthy
    out = Path(recipe.run_dir) / "pretrain"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json"):
        assert (out / "model" / name).is_file(), name
    assert not list((out / "model").glob("*.bin"))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    history = json.loads((out / "log_history.json").read_text())
    assert any("eval_loss" in h for h in history) and any("loss" in h for h in history)
    resolved = yaml.safe_load((out / "recipe.resolved.yaml").read_text())
    assert resolved["pretrain"]["max_steps"] == STEPS and resolved["model"]["n_layer"] == 2
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    steps = sorted({r["step"] for r in rows})
    assert steps == list(range(0, STEPS + 1, 20))
    assert {r["decoding"] for r in rows} == {"greedy", "sampled"}
    assert all({"step", "prompt", "text", "coherence", "loss"} <= set(r) for r in rows)
    manifest = json.loads((out.parent / "manifest.json").read_text())
    entry = manifest["stages"]["pretrain"]
    assert entry["status"] == "finished" and entry["seed"] == recipe.seed
    assert entry["versions"]["transformers"] and "git_sha" in entry and entry["wall_time_s"] > 0
    assert entry["inputs"]["global_batch"] == 16


def test_samples_get_better_as_it_trains(healthy):
    recipe, _ = healthy
    rows = [json.loads(line) for line in
            (Path(recipe.run_dir) / "pretrain" / "samples.jsonl").read_text().splitlines()]
    sampled = lambda step: [r for r in rows if r["step"] == step and r["decoding"] == "sampled"]  # noqa: E731
    first, last = sampled(0), sampled(STEPS)
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "loss") < mean(first, "loss")
    assert mean(last, "coherence") > mean(first, "coherence")


def test_saved_model_loads_with_plain_from_pretrained_and_generates(healthy, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe, result = healthy
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    assert model.config.model_type == "gpt2" and model.config.vocab_size == len(tok)
    enc = tok("ROMEO:\n", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=20)  # the saved generation_config: sampling, top_k off
    assert model.generation_config.top_k == 0 and model.generation_config.do_sample
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert cli.main(["generate", result.model_dir, "--prompt", "ROMEO:\n", "--temperature", "0",
                     "--max-new-tokens", "15"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:\n")


def test_temperature_0_is_greedy_and_top_k_0_is_no_filter(healthy, capsys):
    """`generate --temperature 0` prints what transformers' do_sample=False gives; `--top-k 0` really samples from
    the whole vocabulary (transformers would filter to the top 50 when top_k is left unset)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ladder.data.chat import end_of_turn_ids
    from hf_ladder.generate import generation_config

    _, result = healthy
    model = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    enc = tok("ROMEO:\n", return_tensors="pt")
    greedy = model.generate(**enc, do_sample=False, max_new_tokens=30, eos_token_id=end_of_turn_ids(tok),
                            pad_token_id=tok.pad_token_id)[0, enc["input_ids"].shape[1]:]
    assert cli.main(["generate", result.model_dir, "--prompt", "ROMEO:\n", "--temperature", "0", "--top-k", "5",
                     "--max-new-tokens", "30", "--seed", "3"]) == 0
    assert capsys.readouterr().out == "ROMEO:\n" + tok.decode(greedy, skip_special_tokens=True) + "\n"

    def ranks(top_k: int) -> list[int]:
        """The rank, among the model's logits, of each token sampled at temperature 1.5 with this top_k."""
        config = generation_config(tok, 50, temperature=1.5, top_k=top_k, top_p=1.0)  # (the context is 64)
        torch.manual_seed(0)
        out = model.generate(**enc, generation_config=config, output_logits=True, return_dict_in_generate=True)
        new = out.sequences[0, enc["input_ids"].shape[1]:]
        return [int((logits[0] > logits[0, t]).sum()) for logits, t in zip(out.logits, new)]

    assert max(ranks(0)) >= 50 and max(ranks(50)) < 50


def test_generate_batch_sorts_prompts_by_length_and_returns_them_in_order(healthy):
    """More prompts than a batch go shortest first: a short prompt is not batched with a long one that leaves it
    no room in the 64-token context. Greedy, each sample is what `generate` gives its prompt alone, in the given
    order; `score=False` leaves the losses out."""
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_ladder.generate import generate, generate_batch, generation_config

    _, result = healthy
    model = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    long = "ROMEO:\n" + "O, speak again, bright angel! " * 6
    prompts = [long, "ROMEO:\n", "JULIET:\n", long.upper(), "KING LEAR:\n", "HAMLET:\n"]
    assert len(tok(long)["input_ids"]) > 40
    config = generation_config(tok, 40, temperature=0.0, eos_token_id=-1)  # no end token: every row runs to its room
    batch = generate_batch(model, tok, prompts, config, batch_size=2)
    alone = [generate(model, tok, p, config) for p in prompts]
    assert [s.text for s in batch] == [s.text for s in alone]
    assert [s.tokens for s in batch] == [s.tokens for s in alone]
    assert batch[1].tokens == 40 and batch[0].tokens < 24  # the short prompt had its full room
    assert all(math.isclose(a.loss, b.loss, rel_tol=1e-4) for a, b in zip(batch, alone))
    texts_only = generate_batch(model, tok, prompts, config, batch_size=2, score=False)
    assert [s.text for s in texts_only] == [s.text for s in batch] and all(math.isnan(s.loss) for s in texts_only)


def test_a_model_trained_in_bf16_reads_and_scores_in_its_own_precision(healthy, tmp_path):
    """The Trainer in bf16 leaves accelerate's mixed-precision wrapper on `model.forward` (autocast, outputs cast to
    fp32). `inference` takes it off for its block: the logits are exactly an unwrapped fp32 copy's, not the
    wrapper's bf16 ones, and the wrapper is back afterwards. `fp32_logits` casts the head's bf16 logits once, so the
    wrapper finds fp32 ones: the same loss and gradients, with no second copy."""
    import copy

    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator

    from hf_ladder.data.packing import LMBlocks
    from hf_ladder.modeling import fp32_logits, inference

    _, result = healthy
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    ids = tok(["ROMEO:\nO, speak again, bright angel!", "JULIET:\nWhat's in a name?"], return_tensors="pt",
              padding=True)["input_ids"]  # (2, T)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none", max_steps=1)
    trainer = Trainer(model=model, args=args, train_dataset=LMBlocks(ids), data_collator=default_data_collator)
    wrapped = trainer.accelerator.prepare_model(model)
    assert wrapped is model and "_original_forward" in model.__dict__  # the wrapper sits on the model itself
    plain = copy.deepcopy(model)
    plain.forward = plain._original_forward
    with torch.no_grad():
        fp32 = plain(input_ids=ids).logits  # (2, T, vocab)
        bf16 = model(input_ids=ids).logits
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # the wrapper's: bf16 matmuls, cast back
    forward = model.train().forward
    with inference(model):
        assert torch.equal(model(input_ids=ids).logits, fp32)
    assert model.forward is forward and model.training

    def loss_and_grads(m):
        m.zero_grad()
        loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    head, seen = model.get_output_embeddings(), []  # the dtype of what leaves the head, after the hooks before it

    def watch(m, i, out):
        seen.append(out.dtype)

    hook = head.register_forward_hook(watch)
    loss, grads = loss_and_grads(model)
    hook.remove()
    with fp32_logits(model):
        hook = head.register_forward_hook(watch)
        loss_once, grads_once = loss_and_grads(model)
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32] and not head._forward_hooks  # fp32_logits' hook removed after
    assert torch.equal(loss, loss_once) and all(torch.equal(a, b) for a, b in zip(grads, grads_once))


def test_rerun_of_a_finished_stage_does_not_retrain(healthy, capsys):
    recipe, result = healthy
    start = time.time()
    again = run_stage("pretrain", recipe)
    assert again.status == "finished" and again.metrics == result.metrics
    assert "already finished" in capsys.readouterr().out and time.time() - start < 5


def test_ladder_skips_finished_stages_and_prints_the_rungs(healthy, capsys, tmp_path):
    recipe, result = healthy
    raw = yaml.safe_load(DEFAULT_RECIPE.read_text())
    pretrain_only = tmp_path / "pretrain-only.yaml"
    pretrain_only.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in ("sft", "dpo", "lora",
                                                                                        "quantize")}))
    assert cli.main(["ladder", str(pretrain_only), *TINY, *HEALTHY, f"run_dir={recipe.run_dir}",
                     "eval.tasks=[heldout]", "eval.baselines=[]"]) == 0
    out = capsys.readouterr().out
    assert "pretrain: already finished" in out
    assert f"report: {Path(recipe.run_dir) / 'report' / 'index.html'}" in out  # the ladder ends with the eval
    row = next(line for line in out.splitlines() if line.startswith("pretrain "))
    assert "finished" in row and f"val bits/char {result.metrics['val_bits_per_char']:.3f}" in row


def logged_steps(stage_dir: Path) -> list[list[int]]:
    """The `train/loss` steps of each TensorBoard event file the Trainer wrote (checkpoints/runs/<run>/), oldest
    first: one list per process that trained."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((p for p in (stage_dir / "checkpoints" / "runs").glob("*/events.out.tfevents.*")
                    if p.parent.name != "samples"), key=lambda p: p.stat().st_mtime)  # samples/: the monitor's
    out = []
    for f in files:
        events = EventAccumulator(str(f))
        events.Reload()
        out.append([e.step for e in events.Scalars("train/loss")] if "train/loss" in events.Tags()["scalars"] else [])
    return out


def whole(state: Path) -> bool:
    """Whether a checkpoint's trainer_state.json (the Trainer writes it last) is there and parses."""
    try:
        json.loads(state.read_text())
        return True
    except (OSError, ValueError):
        return False


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "hf_ladder.cli", "run", "pretrain", str(DEFAULT_RECIPE), *TINY,
           f"run_dir={tmp_path}", "pretrain.max_steps=300", "pretrain.save_steps=10", "pretrain.eval_steps=100",
           "monitor.sample_every=100"]
    ckpt = tmp_path / "pretrain" / "checkpoints" / "checkpoint-20"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no clean-up
    proc.wait()
    assert ckpt.exists()
    assert not (tmp_path / "manifest.json").exists()
    complete = [int(p.name.split("-")[1]) for p in ckpt.parent.glob("checkpoint-*") if whole(p / "trainer_state.json")]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = int(re.search(r"resuming from \S*/checkpoint-(\d+)", again.stdout).group(1))
    assert resumed == max(complete) >= 10  # the newest checkpoint the killed run wrote whole (20 may be half)
    first, *_ = logged_steps(tmp_path / "pretrain")[-1]
    assert first == resumed + 10  # the rerun's first logged step: it went on from there (a restart logs step 10)
    assert "samples @ step 0 " not in again.stdout  # nor sampled the untrained model again
    metrics = json.loads((tmp_path / "pretrain" / "metrics.json").read_text())
    assert metrics["global_step"] == 300
    straight = tmp_path / "straight"  # the same command, never interrupted: on CPU the weights are bitwise equal
    again_cmd = [f"run_dir={straight}" if c == f"run_dir={tmp_path}" else c for c in cmd]
    done = subprocess.run(again_cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = load_file(tmp_path / "pretrain" / "model" / "model.safetensors")
    uninterrupted = load_file(straight / "pretrain" / "model" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_llama_style_model_trains_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM

    llama = ("model={model_type: llama, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, "
             "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}")
    recipe = tiny_recipe(tmp_path, llama, "pretrain.max_steps=20", "monitor.sample_every=10")
    result = run_stage("pretrain", recipe)
    assert result.status == "finished"
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert model.config.model_type == "llama" and model.config.num_key_value_heads == 2
    assert result.metrics["val_loss"] < math.log(model.config.vocab_size)


def test_evaluation_while_training_reads_evenly_spaced_validation_blocks():
    """`data.max_eval_samples`: the Trainer's evaluations read that many validation blocks spread over the whole
    validation text (both plays), not its first ones; null reads them all."""
    from hf_ladder.stages.pretrain import evenly_spaced

    blocks = torch.arange(557)[:, None].repeat(1, 8)  # (557, 8): row i holds i
    picked = evenly_spaced(blocks, 128)[:, 0].tolist()
    assert len(picked) == 128 and picked[0] == 0 and picked[-1] == 556
    assert all(b - a in (4, 5) for a, b in zip(picked, picked[1:]))  # 556 / 127 = 4.4 apart
    assert evenly_spaced(blocks, None) is blocks and evenly_spaced(blocks, 557) is blocks
