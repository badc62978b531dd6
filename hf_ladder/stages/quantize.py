"""Quantize: 8-bit (LLM.int8) and 4-bit (nf4 / fp4) variants with `bitsandbytes`, each with its measured cost.

Reads: the latest model below it in the run manifest (lora, dpo, sft or pretrain) or
`quantize.model_name_or_path`; `quantize.variants` maps a name to BitsAndBytesConfig arguments (default:
int8, nf4, fp4; compute dtype, double quant and the rest are BitsAndBytesConfig's own keys).
Each variant is quantized on load, saved to `quantize/<variant>/model/`, reloaded from disk, and measured
against the unquantized model on the same held-out text and prompts:
- bytes on disk (the saved files) and in memory (the tensors' storage, bitsandbytes' quantization
  constants included; `get_memory_footprint()` misses those of some backends), for the whole model and
  for the linear layers that are quantized, as held once the model has run (on a CPU with AVX512-BF16
  bitsandbytes repacks 4-bit weights at the first forward: absmax in bf16, a double quantization's nested state
  folded back; elsewhere absmax stays fp32);
- perplexity and bits per byte on the recipe's validation text, and the change relative to the original;
- greedy generation tokens/s at batch 1 with the KV cache;
- samples for the same prompts, with coherence scores, side by side in samples.jsonl.
A variant the current device cannot run is reported as skipped, with the reason; no number is made up.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from transformers import BitsAndBytesConfig

from hf_ladder import metrics as registry
from hf_ladder.data.corpus import load_corpus
from hf_ladder.eval.perplexity import score_text
from hf_ladder.generate import generate, generation_config
from hf_ladder.keys import library_rejects, split_section
from hf_ladder.modeling import context_length, device, inference, load_model, load_tokenizer
from hf_ladder.monitor import coherence_score
from hf_ladder.runs import Context, StageResult, save_model, write_json, write_jsonl, write_yaml
from hf_ladder.schema import HubArgs, QuantizeArgs, SourceArgs
from hf_ladder.stages.common import Stage, base_model

SPEED_TOKENS = 64  # new tokens per timed generation


def run(cfg: dict, ctx: Context) -> StageResult:
    """Quantize and measure every variant (see the module docstring); `cfg` is the recipe's `quantize:`, by part."""
    start = time.time()
    recipe, out = ctx.recipe, ctx.run.stage_dir("quantize")
    src = base_model("quantize", cfg, ctx)
    variants = cfg["variants"].variants
    metrics, rows, saved, skipped = quantize_and_measure(src, variants, recipe, out)
    write_jsonl(out / "samples.jsonl", rows)
    metrics["wall_time_s"] = time.time() - start
    write_json(out / "metrics.json", metrics)
    write_yaml(out / "recipe.resolved.yaml", recipe.to_dict())
    return StageResult(stage="quantize", status="finished" if saved else "stopped",
                       model_dir=next(iter(saved.values()), str(out)), metrics=metrics,
                       reason="; ".join(f"{k} skipped: {v}" for k, v in skipped.items()) or None,
                       wall_time_s=time.time() - start,
                       inputs={"source_model": src, "variants": saved, "skipped": skipped,
                               "configs": variants})


def quantize_and_measure(src: str, variants: dict[str, dict], recipe, out: Path):
    """Measure the full-precision model at `src`, then each variant: quantize on load, save to
    `out/<variant>/model`, reload from disk, measure. Prints the comparison table.

    Returns:
        (flat metrics "<variant>_<name>", sample rows, {variant: saved folder}, {variant: why it was skipped}).
    """
    text = load_corpus(recipe.data).validation_text
    tokenizer = load_tokenizer(src)
    where = device()
    reference = load_model(src).to(where)
    linear_names = [n for n, m in reference.named_modules() if type(m).__name__ in ("Conv1D", "Linear")
                    and n != "lm_head"]  # what bitsandbytes replaces (lm_head stays in full precision)
    rows: list[dict] = []
    ref = measure(reference, tokenizer, text, recipe, "fp32", rows, linear_names, disk=dir_bytes(Path(src)))
    metrics = {f"fp32_{k}": v for k, v in ref.items()}
    skipped, saved = {}, {}
    for name, kwargs in variants.items():
        print(f"\n-- {name}: BitsAndBytesConfig({', '.join(f'{k}={v}' for k, v in kwargs.items())})", flush=True)
        dest = out / name / "model"
        try:
            quantized = load_model(src, quantization_config=BitsAndBytesConfig(**kwargs), device_map={"": where})
            save_model(quantized, tokenizer, dest)
            del quantized
            reloaded = load_model(dest, device_map={"": where})  # from disk
            m = measure(reloaded, tokenizer, text, recipe, name, rows, linear_names, disk=dir_bytes(dest))
        except Exception as e:  # a backend this device cannot run: say so and go on
            skipped[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: skipped on {where} ({skipped[name]})")
            continue
        m["perplexity_change"] = m["perplexity"] / ref["perplexity"] - 1
        m["linear_bytes_ratio"] = m["linear_bytes"] / ref["linear_bytes"]
        metrics.update({f"{name}_{k}": v for k, v in m.items()})
        saved[name] = str(dest)
    print(f"\n{src} on {where}:\n" + table(metrics, ["fp32", *saved]))
    for name, why in skipped.items():
        print(f"{name}: not measured ({why})")
    return metrics, rows, saved, skipped


def measure(model, tokenizer, text: str, recipe, name: str, rows: list[dict], linear_names: list[str],
            disk: int) -> dict[str, float]:
    """Size, quality and speed of one model; its samples are appended to `rows`."""
    score = score_text(model, tokenizer, text, recipe.data.block_size)
    modules = dict(model.named_modules())
    out = {"disk_bytes": disk, "memory_bytes": tensor_bytes(model.modules()),
           "linear_bytes": tensor_bytes(modules[n] for n in linear_names if n in modules),
           "perplexity": score.perplexity, "bits_per_byte": score.bits_per_byte, "loss": score.loss,
           "tokens_per_second": tokens_per_second(model, tokenizer, recipe.monitor.prompts[0])}
    g = recipe.monitor.generation
    for decoding, temperature in (("greedy", 0.0), ("sampled", g.temperature)):
        config = generation_config(tokenizer, g.max_new_tokens, temperature, g.top_k, g.top_p)
        for i, prompt in enumerate(recipe.monitor.prompts):
            sample = generate(model, tokenizer, prompt, config, seed=recipe.seed + i)
            rows.append({"variant": name, "prompt": prompt, "decoding": decoding, "text": sample.text,
                         "coherence": round(coherence_score(sample.text), 2), "loss": round(sample.loss, 4)})
    print(f"{name}: perplexity {score.perplexity:.2f} · {score.bits_per_byte:.4f} bits/byte · "
          f"{out['memory_bytes'] / 1e6:.2f} MB in memory · {out['disk_bytes'] / 1e6:.2f} MB on disk · "
          f"{out['tokens_per_second']:.0f} tokens/s")
    return out


def tensor_bytes(modules) -> int:
    """Bytes of tensor storage held by these modules' own parameters and buffers, counting each storage
    once, plus bitsandbytes' quantization state (4-bit absmax / code, 8-bit row scales) that lives outside
    the parameters."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if t is not None and isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()

    for module in modules:
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            add(t)
            state = getattr(t, "quant_state", None)  # Params4bit
            if state is not None:
                add(state.absmax)
                add(state.code)
                nested = getattr(state, "state2", None)  # double quantization: the absmax, quantized again
                if nested is not None:
                    add(nested.absmax)
                    add(nested.code)
            add(getattr(t, "SCB", None))  # Int8Params row scales
    return total


def tokens_per_second(model, tokenizer, prompt: str, repeats: int = 3) -> float:
    """Greedy decoding speed at batch 1 with the KV cache: exactly SPEED_TOKENS new tokens, median of runs."""
    on = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt").to(on)
    n = min(SPEED_TOKENS, context_length(model) - enc["input_ids"].shape[1])
    times = []
    with inference(model):
        for _ in range(repeats + 1):  # the first run warms up
            if on.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                           pad_token_id=tokenizer.pad_token_id)
            if on.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return n / statistics.median(times[1:])


def dir_bytes(path: Path) -> int:
    """Bytes of the weight files in a model folder (safetensors)."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def table(metrics: dict[str, float], names: list[str]) -> str:
    """The fp32 / 8-bit / 4-bit comparison as a Markdown table, a column per `quantization` metric
    (hf_ladder.metrics); the fp32 row is its own reference (ratio 1, change 0)."""
    columns = registry.shown("quantization", "quantize")
    lines = ["| variant | " + " | ".join(m.label for m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for n in names:
        own = {"linear_bytes_ratio": 1.0, "perplexity_change": 0.0} if n == "fp32" else {}
        cells = [m.format(metrics.get(f"{n}_{m.key}", own.get(m.key))) for m in columns]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(parts: dict, errors: list[str]) -> None:
    """Each variant: BitsAndBytesConfig's own keys and values, 8-bit or 4-bit."""
    for name, kwargs in parts["variants"].variants.items():
        where = f"quantize.variants.{name}"
        if not isinstance(kwargs, dict):
            errors.append(f"{where}: expected BitsAndBytesConfig arguments, got {kwargs!r}")
            continue
        bnb = split_section(where, kwargs, {"bnb": BitsAndBytesConfig}, errors)["bnb"]
        if not (bnb.get("load_in_8bit") or bnb.get("load_in_4bit")):
            errors.append(f"{where}: set load_in_8bit: true or load_in_4bit: true")
        else:
            library_rejects(where, BitsAndBytesConfig, bnb, errors)
        parts["variants"].variants[name] = bnb


def variant_rungs(stage: str, result: StageResult, stage_dir: Path) -> dict[str, Path]:
    """A rung per saved variant, `quantize/<variant>`, its model in `quantize/<variant>/model`."""
    return {f"{stage}/{v}": stage_dir / v for v in result.inputs.get("variants", {})}


STAGE = Stage(name="quantize", parts={"hub": HubArgs, "source": SourceArgs, "variants": QuantizeArgs}, run=run,
              check=check, main_process_only=True, rungs=variant_rungs,
              summary="This rung is the model below it quantized with bitsandbytes ({v}); no training.")
