"""The pretrain stage's training speed against a bare PyTorch loop doing the same work.

    python bench/train_vs_bare.py [RECIPE] [--steps N] [--repeats K]

The bare loop (below, nanoGPT-style) trains the recipe's model, built and initialised as the stage builds it, on the
same packed blocks (the same tokenizer and corpus), at the same batch and block size, precision (bf16 autocast when
the recipe's `bf16`), optimizer (torch AdamW, fused where the Trainer's `optim` is its default adamw_torch_fused,
with the recipe's learning rate, betas, epsilon and weight decay, decay off for biases and LayerNorm weights as the
Trainer does), schedule (`lr_scheduler_type`, `warmup_steps`) and
gradient clipping (`max_grad_norm`). The stage runs `hf-ladder run pretrain` in-process with `max_steps=N`, once with
the sample monitor at the recipe's cadence (sample rounds, evaluations and checkpoints every `sample_every`
steps) and once with it off (`monitor.sample_every` above N: one round at the end). They alternate, bare, stage
(monitor on), stage (monitor off), `--repeats` times, and the table gives medians of tokens/s (the stage's own
`tokens_per_second`: tokens over the Trainer's `train_runtime`), the ratio to the bare loop, and the share of the
stage's training time spent in sample rounds, in evaluations and in saving checkpoints (the ladder evaluates and
saves on the monitor's cadence; the Trainer also evaluates and saves after the last step).
A benchmark, not a test: the figures depend on the machine, and nothing else should run beside it.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Trainer, TrainingArguments, get_scheduler, set_seed  # noqa: E402

from hf_ladder.allocator import keep_freed_memory  # noqa: E402
from hf_ladder.data.corpus import load_corpus  # noqa: E402
from hf_ladder.data.packing import pack  # noqa: E402
from hf_ladder.data.tokenizer import encode_documents, get_tokenizer  # noqa: E402
from hf_ladder.ladder import run_stage  # noqa: E402
from hf_ladder.modeling import build_model, device  # noqa: E402
from hf_ladder.monitor import SampleMonitor  # noqa: E402
from hf_ladder.recipe import load_recipe  # noqa: E402


def bare_loop(recipe, blocks: torch.Tensor, tokenizer, steps: int) -> float:
    """Train `steps` optimizer steps with plain PyTorch; returns tokens/s, timed as the Trainer times
    `train_runtime`: from before the first step (its warm-up included) to after the last."""
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=device() == "cpu", report_to="none",
                             **recipe.stages["pretrain"]["args"])
    set_seed(recipe.seed)
    model = build_model(recipe.model, tokenizer).to(device()).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate,
                            betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                            fused=args.optim == "adamw_torch_fused")  # the Trainer's default: fused, as the stage
    sched = get_scheduler(args.lr_scheduler_type, opt, args.get_warmup_steps(steps), steps)
    batch, gen = args.per_device_train_batch_size, torch.Generator().manual_seed(recipe.seed)
    order = torch.randperm(len(blocks), generator=gen)
    start = time.perf_counter()
    for step in range(steps):
        idx = order[(step * batch) % len(blocks):][:batch]
        if len(idx) < batch:
            order = torch.randperm(len(blocks), generator=gen)
            idx = order[:batch]
        x = blocks[idx].to(device())  # (batch, block_size)
        with torch.autocast(device(), dtype=torch.bfloat16, enabled=bool(args.bf16)):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * blocks.shape[1] / (time.perf_counter() - start)


def stage_run(recipe_path: str, steps: int, monitor_on: bool) -> dict[str, float]:
    """`hf-ladder run pretrain` with max_steps=steps; tokens/s and the shares of sample rounds, evaluations and
    checkpoint saves."""
    spent = {"rounds": 0.0, "saves": 0.0}
    original, save = SampleMonitor.sample_round, Trainer._save_checkpoint

    def timed(self, model, step, *a, **k):
        t = time.perf_counter()
        try:
            return original(self, model, step, *a, **k)
        finally:
            if step > 0:  # the round of the untrained model runs before the Trainer's clock starts
                spent["rounds"] += time.perf_counter() - t

    def timed_save(self, *a, **k):
        t = time.perf_counter()
        try:
            return save(self, *a, **k)
        finally:
            spent["saves"] += time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"run_dir={tmp}", f"pretrain.max_steps={steps}"]
        if not monitor_on:
            overrides.append(f"monitor.sample_every={steps + 1}")
        recipe = load_recipe(recipe_path, overrides)
        SampleMonitor.sample_round, Trainer._save_checkpoint = timed, timed_save
        try:
            result = run_stage("pretrain", recipe)
        finally:
            SampleMonitor.sample_round, Trainer._save_checkpoint = original, save
        m = result.metrics
        runtime = m["train_runtime_s"]
        logs = json.loads((Path(tmp) / "pretrain" / "log_history.json").read_text())
        evals = sum(h.get("eval_runtime", 0.0) for h in logs)
        return {"tokens_per_second": m["tokens_per_second"], "rounds_share": spent["rounds"] / runtime,
                "eval_share": evals / runtime, "save_share": spent["saves"] / runtime}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-tiny.yaml")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    kept = keep_freed_memory()
    recipe = load_recipe(a.recipe)
    corpus = load_corpus(recipe.data)
    tokenizer = get_tokenizer(recipe.tokenizer, corpus.train, model_max_length=recipe.data.block_size)
    blocks = pack(encode_documents(tokenizer, corpus.train), recipe.data.block_size)  # (n, block_size)
    bare, on, off = [], [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(recipe, blocks, tokenizer, a.steps))
        on.append(stage_run(a.recipe, a.steps, monitor_on=True))
        off.append(stage_run(a.recipe, a.steps, monitor_on=False))
    b = statistics.median(bare)
    where = device() if device() != "cpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{recipe.name}: {a.steps} steps x {a.repeats}, batch "
          f"{recipe.stages['pretrain']['args'].get('per_device_train_batch_size', 8)} x {recipe.data.block_size}, "
          f"{where}, torch {torch.__version__}, glibc thresholds raised: {kept}, sample_every "
          f"{recipe.monitor.sample_every}")
    print(f"{'loop':<22} {'tokens/s':>10} {'x bare':>7} {'rounds %':>9} {'evals %':>8} {'saves %':>8}")
    print(f"{'bare PyTorch':<22} {b:>10,.0f} {1:>7.2f}")
    for name, runs in (("stage, monitor on", on), ("stage, monitor off", off)):
        tps = statistics.median(r["tokens_per_second"] for r in runs)
        rounds = statistics.median(r["rounds_share"] for r in runs)
        evals = statistics.median(r["eval_share"] for r in runs)
        saves = statistics.median(r["save_share"] for r in runs)
        print(f"{name:<22} {tps:>10,.0f} {tps / b:>7.2f} {100 * rounds:>8.1f}% {100 * evals:>7.1f}% "
              f"{100 * saves:>7.1f}%")


if __name__ == "__main__":
    main()
