"""The cost of quantization for a ladder's model: fp32 / 8-bit / nf4 / fp4, measured, as a Markdown table.

    python bench/quantization.py [RECIPE] [--model DIR]

Uses the latest finished stage of the recipe's run (lora, dpo, sft or pretrain; run `make ladder` first)
or `--model`; the variants are the recipe's `quantize.variants` (default int8, nf4, fp4). The same
measurement as the quantize stage: disk and memory bytes (whole model and quantized linear layers),
perplexity and bits per byte on the recipe's validation text, greedy tokens/s at batch 1 with KV cache.
"""

import argparse
import sys
import tempfile
from pathlib import Path

from hf_ladder.recipe import load_recipe
from hf_ladder.runs import Run
from hf_ladder.schema import QuantizeArgs
from hf_ladder.stages.quantize import quantize_and_measure


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-tiny.yaml")
    p.add_argument("--model", help="a model folder (default: the run's latest stage)")
    args = p.parse_args()
    recipe = load_recipe(args.recipe)
    run = Run(recipe)
    src = args.model or next((r.model_dir for s in ("lora", "dpo", "sft", "pretrain") if (r := run.finished(s))), None)
    if src is None:
        print(f"quantization: skipped, no finished stage in {run.root}: run `make ladder` first (or give --model DIR)")
        return 0
    variants = (recipe.stages["quantize"]["variants"] if "quantize" in recipe.stages else QuantizeArgs()).variants
    with tempfile.TemporaryDirectory() as tmp:
        quantize_and_measure(src, variants, recipe, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
