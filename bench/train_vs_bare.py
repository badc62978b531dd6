"""The pretrain stage's training speed against a bare PyTorch loop doing the same work.

    python bench/train_vs_bare.py [RECIPE] [--steps N] [--repeats K] [--slice SECONDS]

The bare loop (below, nanoGPT-style) trains the recipe's model, built and initialised as the stage builds it, on the
same packed blocks (the same tokenizer and corpus), at the same batch and block size, precision (bf16 autocast where
the stage's `bf16` is on, `stages.common.training_defaults`), optimizer (torch AdamW, fused where the Trainer's
`optim` is its default adamw_torch_fused, with the recipe's learning rate, betas, epsilon and weight decay, decay off
for biases and LayerNorm weights as the Trainer does), schedule (`lr_scheduler_type`, `warmup_steps`) and
gradient clipping (`max_grad_norm`). The stage runs as `hf-ladder run pretrain` runs it, with `max_steps=N`, once
with the sample monitor at the recipe's cadence (sample rounds, evaluations and checkpoints every `sample_every`
steps) and once with it off (`monitor.sample_every` above N: one round at the end, after the clock stops).

The three runs (bare, monitor on, monitor off) are three processes. Each sets up on its own (tokenizer, data,
model; the stage's first sample round), then stops itself where its training clock would start; from there they
take turns on the CPU, `--slice` seconds each (SIGCONT / SIGSTOP from this script), so a change in the machine's
speed while they train (on the shared VM the same bare loop ran anywhere from 21k to 36k tokens/s within about a
minute) falls on all three alike. Each run's time is its training window (the bare loop: first step to last; the
stage: the Trainer's `train_runtime` window) less the time it was stopped; tokens/s is tokens over that.
`--repeats` such triples run one after another; the table gives medians: tokens/s, the ratio to the bare loop,
and the share of the stage's training time spent in sample rounds, in evaluations and in saving checkpoints (the
ladder evaluates and saves on the monitor's cadence; the Trainer also evaluates and saves after the last step).
A benchmark, not a test: the figures depend on the machine, and nothing else should run beside it.
"""

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

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
from hf_ladder.stages.common import training_defaults  # noqa: E402


def wait_for_turn() -> None:
    """Stop this process until `take_turns` starts the runs together (a run started on its own goes on)."""
    if os.environ.get("TRAIN_VS_BARE_TURNS") == "1":
        os.kill(os.getpid(), signal.SIGSTOP)


def bare_loop(recipe, blocks: torch.Tensor, tokenizer, steps: int) -> dict:
    """Train `steps` optimizer steps with plain PyTorch; returns the tokens trained and the training window
    (`time.monotonic()` seconds), timed as the Trainer times `train_runtime`: from before the first step (its
    warm-up included) to after the last."""
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), **{  # the stage's arguments, precision included
        **training_defaults(recipe.stages["pretrain"]["args"], recipe), "report_to": "none"})
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
    wait_for_turn()
    start = time.monotonic()
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
    return {"tokens": steps * batch * blocks.shape[1], "window": (start, time.monotonic())}


def stage_run(recipe_path: str, steps: int, monitor_on: bool) -> dict:
    """`hf-ladder run pretrain` with max_steps=steps: the tokens trained, the Trainer's `train_runtime` window
    and the windows of sample rounds, evaluations and checkpoint saves inside it (`time.monotonic()` seconds)."""
    spans = {"rounds": [], "evals": [], "saves": []}
    clock = {}

    def timed(kind):  # the span of each call inside the training window
        def decorate(f):
            def wrapper(self, *a, **k):
                t = time.monotonic()
                try:
                    return f(self, *a, **k)
                finally:
                    if "start" in clock and "end" not in clock:
                        spans[kind].append((t, time.monotonic()))
            return wrapper
        return decorate

    def clocked(key, wait=False):  # the time the call starts (after this run's turn comes, with `wait`)
        def decorate(f):
            def wrapper(self, *a, **k):
                if wait:
                    wait_for_turn()
                clock[key] = time.monotonic()
                return f(self, *a, **k)
            return wrapper
        return decorate

    wrappers = {(SampleMonitor, "sample_round"): timed("rounds"), (Trainer, "evaluate"): timed("evals"),
                (Trainer, "_save_checkpoint"): timed("saves"),
                # the Trainer's start_time is taken in _inner_training_loop after its set-up (< 5 ms), and
                # _finalize_training reads its clock for train_runtime first thing
                (Trainer, "_inner_training_loop"): clocked("start", wait=True),
                (Trainer, "_finalize_training"): clocked("end")}

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"run_dir={tmp}", f"pretrain.max_steps={steps}"]
        if not monitor_on:
            overrides.append(f"monitor.sample_every={steps + 1}")
        recipe = load_recipe(recipe_path, overrides)
        with contextlib.ExitStack() as patches:
            for (cls, name), wrap in wrappers.items():
                patches.enter_context(mock.patch.object(cls, name, wrap(getattr(cls, name))))
            result = run_stage("pretrain", recipe)
    m = result.metrics
    return {"tokens": m["tokens_seen"], "window": (clock["start"], clock["end"]), **spans}  # a fresh run: from step 0


def measure(recipe_path: str, steps: int, kind: str) -> dict:
    """One run of `kind` ("bare", "on": the stage with the monitor on, "off": with it off), in this process."""
    kept = keep_freed_memory()  # what `hf-ladder` does first thing
    if kind != "bare":
        return {**stage_run(recipe_path, steps, monitor_on=kind == "on"), "kept": kept}
    recipe = load_recipe(recipe_path)
    corpus = load_corpus(recipe.data)
    tokenizer = get_tokenizer(recipe.tokenizer, corpus.train, model_max_length=recipe.data.block_size)
    blocks = pack(encode_documents(tokenizer, corpus.train), recipe.data.block_size)  # (n, block_size)
    return {**bare_loop(recipe, blocks, tokenizer, steps), "kept": kept}


def take_turns(recipe_path: str, steps: int, kinds: list[str], slice_s: float) -> dict[str, dict]:
    """Run `measure` for each kind in a process of its own: each sets up alone until it stops itself at the start
    of its training (`wait_for_turn`); then they take turns, `slice_s` seconds each, stopped while the others run.
    Returns kind -> its result with "stopped", the spans (start, end) it spent stopped once training had begun."""
    procs, logs, stopped = {}, {}, {k: [] for k in kinds}

    def failed(kind):
        logs[kind].seek(0)
        raise SystemExit(f"the {kind} run failed:\n{logs[kind].read()[-3000:]}")

    try:
        for kind in kinds:  # set-ups one after another, alone on the CPU
            logs[kind] = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would block a running child
            procs[kind] = subprocess.Popen([sys.executable, __file__, recipe_path, "--steps", str(steps), "--only",
                                            kind], stdout=logs[kind], stderr=subprocess.STDOUT, text=True,
                                           env={**os.environ, "TRAIN_VS_BARE_TURNS": "1"})
            _, status = os.waitpid(procs[kind].pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                failed(kind)
        live = list(kinds)
        while live:
            for kind in list(live):
                p, t = procs[kind], time.monotonic()
                if stopped[kind]:
                    stopped[kind][-1][1] = t
                p.send_signal(signal.SIGCONT)
                try:
                    p.wait(timeout=slice_s)
                    live.remove(kind)
                    if p.returncode != 0:
                        failed(kind)
                except subprocess.TimeoutExpired:
                    p.send_signal(signal.SIGSTOP)
                    stopped[kind].append([time.monotonic(), None])
    finally:  # an interrupted bench leaves no stopped process behind
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    results = {}
    for kind in kinds:
        logs[kind].seek(0)
        results[kind] = {**json.loads(logs[kind].read().strip().splitlines()[-1]), "stopped": stopped[kind]}
    return results


def running(span, stopped) -> float:
    """Seconds of `span` (start, end) during which the process was not stopped."""
    start, end = span
    return (end - start) - sum(max(0.0, min(end, b) - max(start, a)) for a, b in stopped if b is not None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-tiny.yaml")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--slice", type=float, default=1.0, help="seconds each run has the CPU at a time")
    p.add_argument("--only", choices=["bare", "on", "off"], help=argparse.SUPPRESS)  # one run, as JSON (internal)
    a = p.parse_args()
    if a.only:
        print(json.dumps(measure(a.recipe, a.steps, a.only)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` or `timeout` runs take_turns' clean-up too
    recipe = load_recipe(a.recipe)
    rows: dict[str, list[dict]] = {"bare": [], "on": [], "off": []}
    for r in range(a.repeats):
        results = take_turns(a.recipe, a.steps, list(rows), a.slice)
        for kind, res in results.items():
            train_s = running(res["window"], res["stopped"])
            rows[kind].append({"tokens_per_second": res["tokens"] / train_s, **{
                f"{part}_share": sum(running(s, res["stopped"]) for s in res[part]) / train_s
                for part in ("rounds", "evals", "saves") if part in res}})
        bare = rows["bare"][-1]["tokens_per_second"]
        print(f"repeat {r + 1}/{a.repeats}: tokens/s " + ", ".join(
            f"{k} {v[-1]['tokens_per_second']:,.0f}" + (f" ({v[-1]['tokens_per_second'] / bare:.3f}x)" if k != "bare"
                                                       else "") for k, v in rows.items()), flush=True)
    b = statistics.median(r["tokens_per_second"] for r in rows["bare"])
    where = device() if device() != "cpu" else f"CPU, {torch.get_num_threads()} threads"
    precision = "bf16" if training_defaults(recipe.stages["pretrain"]["args"], recipe)["bf16"] else "fp32"
    print(f"\n{recipe.name}: {a.steps} steps x {a.repeats}, the three runs taking turns {a.slice:g} s at a time, "
          f"batch {recipe.stages['pretrain']['args'].get('per_device_train_batch_size', 8)} x "
          f"{recipe.data.block_size}, {where}, {precision}, torch {torch.__version__}, glibc thresholds raised: "
          f"{results['bare']['kept']}, sample_every {recipe.monitor.sample_every}")
    print(f"{'loop':<22} {'tokens/s':>10} {'x bare':>7} {'rounds %':>9} {'evals %':>8} {'saves %':>8}")
    print(f"{'bare PyTorch':<22} {b:>10,.0f} {1:>7.3f}")
    for name, kind in (("stage, monitor on", "on"), ("stage, monitor off", "off")):
        tps = statistics.median(r["tokens_per_second"] for r in rows[kind])
        shares = [100 * statistics.median(r[f"{part}_share"] for r in rows[kind])
                  for part in ("rounds", "evals", "saves")]
        print(f"{name:<22} {tps:>10,.0f} {tps / b:>7.3f} {shares[0]:>8.1f}% {shares[1]:>7.1f}% {shares[2]:>7.1f}%")


if __name__ == "__main__":
    main()
