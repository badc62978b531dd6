"""What the models the ladder did not train cost: the eval of each baseline, per task, and the monitor's judge.

    python bench/baseline_cost.py [RECIPE] [--rounds N]

Baselines: the recipe's `eval.baselines` in `suite.baseline_dtype`, scored exactly as `hf-ladder eval` scores a rung
(`hf_ladder.eval.suite.score_rung`: the recipe's tasks, limits, prompt sets and judge), seconds per task. A baseline
that cannot load (GPT-2 without the Hub) is listed as such. Judge (`monitor.judge`): judge_ppl of one sample round
(the monitor's prompts x greedy and sampled, continuations of `monitor.generation.max_new_tokens` tokens of the
validation text) read one round at a time, as a judge inside the training loop would, against all `--rounds` rounds
read in one batched pass, as the monitor does when training ends.
A benchmark, not a test: the figures depend on the machine, and nothing else should run beside it.
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from hf_ladder.allocator import keep_freed_memory  # noqa: E402
from hf_ladder.data.corpus import load_corpus  # noqa: E402
from hf_ladder.eval import suite  # noqa: E402
from hf_ladder.modeling import device  # noqa: E402
from hf_ladder.monitor.judge import load_judge  # noqa: E402
from hf_ladder.recipe import load_recipe  # noqa: E402
from hf_ladder.schema import EvalConfig  # noqa: E402


def baselines(recipe, validation_text: str) -> None:
    cfg = recipe.eval or EvalConfig()
    docs, tasks = suite.load_tasks(list(cfg.tasks), suite.benchmark_data(cfg.data_dir), cfg.limit)
    prompt_sets = suite.load_prompts(cfg.prompts) if "samples" in tasks else {}
    judge = load_judge(cfg.judge) if prompt_sets else None
    print(f"\nbaselines ({suite.baseline_dtype(cfg)}), tasks at the recipe's limits {cfg.limit}; seconds per task")
    print(f"{'baseline':<24} " + " ".join(f"{t:>12}" for t in tasks) + f" {'total':>8}")
    for source in cfg.baselines:
        try:
            model, tokenizer = suite.load(source, suite.baseline_dtype(cfg))
        except (OSError, ValueError, ImportError) as e:
            print(f"{suite.baseline_name(source):<24} not loaded here ({type(e).__name__})")
            continue
        rung = suite.score_rung(model, tokenizer, tasks, docs, validation_text, prompt_sets, recipe, judge)
        cells = [f"{rung.seconds[t]:>11.1f}s" if t in rung.seconds else f"{'skipped':>12}" for t in tasks]
        print(f"{suite.baseline_name(source):<24} " + " ".join(cells) + f" {sum(rung.seconds.values()):>7.1f}s",
              flush=True)
        del model


def judge_cost(recipe, validation_text: str, rounds: int) -> None:
    judge = load_judge(recipe.monitor.judge)
    if judge is None:
        print(f"\njudge: {recipe.monitor.judge} not loaded here")
        return
    prompts = list(recipe.monitor.prompts) * 2  # greedy and sampled
    chars = 4 * recipe.monitor.generation.max_new_tokens  # ~ the tokens of a sample, as text
    texts = [validation_text[i * chars: (i + 1) * chars] for i in range(rounds * len(prompts))]
    judge.perplexity(prompts, texts[: len(prompts)])  # warm-up
    start = time.perf_counter()
    for r in range(rounds):
        judge.perplexity(prompts, texts[r * len(prompts): (r + 1) * len(prompts)])
    one_by_one = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    judge.perplexity(prompts * rounds, texts)
    batched = (time.perf_counter() - start) / rounds
    print(f"\njudge {judge.source} ({str(judge.model.dtype).removeprefix('torch.')}): {len(prompts)} samples of "
          f"~{recipe.monitor.generation.max_new_tokens} tokens per round\n"
          f"  in the loop, one round at a time: {one_by_one:.2f} s per round\n"
          f"  after training, {rounds} rounds in one pass: {batched:.2f} s per round ({rounds * batched:.1f} s)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="recipes/shakespeare-tiny.yaml")
    p.add_argument("--rounds", type=int, default=7, help="sample rounds of a run (the default ladder: 7)")
    a = p.parse_args()
    keep_freed_memory()
    recipe = load_recipe(a.recipe)
    validation_text = load_corpus(recipe.data).validation_text
    where = device() if device() != "cpu" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{recipe.name}: {where}, torch {torch.__version__}")
    judge_cost(recipe, validation_text, a.rounds)
    baselines(recipe, validation_text)


if __name__ == "__main__":
    main()
