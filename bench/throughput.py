"""Training throughput of a recipe's model on this machine: tokens/s per precision and attention kernel.

    python bench/throughput.py [RECIPE] [--steps N]

Times optimizer steps of the recipe's model at its batch and block size (random token ids: throughput
does not depend on the text), after a few warm-up steps, for fp32 / bf16 autocast x sdpa / eager
attention, and prints a table (bf16 on a CPU without native bf16, `modeling.native_bf16`: 2 steps after 1 warm-up,
tens of times slower there). A benchmark, not a test: the figures depend on the machine.
"""

import argparse
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hf_ladder.modeling import device, native_bf16
from hf_ladder.recipe import load_recipe


def time_steps(recipe, attn: str, bf16: bool, steps: int, warmup: int = 3) -> float:
    cfg = recipe.model
    kwargs = {k: v for k, v in cfg.items() if k not in ("model_type", "init_from", "attn_implementation")}
    config = AutoConfig.for_model(cfg.get("model_type", "gpt2"), vocab_size=recipe.tokenizer.vocab_size, **kwargs)
    where = device()
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn).to(where)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = recipe.stages["pretrain"]["args"].get("per_device_train_batch_size", 8)
    x = torch.randint(0, recipe.tokenizer.vocab_size, (batch, recipe.data.block_size), device=where)
    for i in range(warmup + steps):
        if i == warmup:
            if where == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(where, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if where == "cuda":
        torch.cuda.synchronize()
    return steps * x.numel() / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-tiny.yaml")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    recipe = load_recipe(args.recipe)
    where = device() if device() != "cpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{recipe.name}: batch {recipe.stages['pretrain']['args'].get('per_device_train_batch_size', 8)} x block "
          f"{recipe.data.block_size}, {where}, torch {torch.__version__}")
    print(f"{'precision':<10} {'attention':<10} {'tokens/s':>10}")
    for bf16 in (False, True):
        steps, warmup, note = ((args.steps, 3, "") if native_bf16() or not bf16 else
                               (2, 1, f"  (no native bf16 on this {torch.backends.cpu.get_cpu_capability()} CPU)"))
        for attn in ("sdpa", "eager"):
            tps = time_steps(recipe, attn, bf16, steps, warmup)
            print(f"{'bf16' if bf16 else 'fp32':<10} {attn:<10} {tps:>10,.0f}{note}", flush=True)


if __name__ == "__main__":
    main()
