"""Benchmark scoring speed: our scorer (hf_ladder.eval.benchmarks) against lm-evaluation-harness, same numbers.

    python bench/eval_speed.py [--model PATH] [--limit N] [--repeats 3] [--data-dir ../shared/data] [--tasks ...]

Both score the same in-memory model (fp32) on the same local documents: ours through `benchmarks.evaluate`,
lm-eval through `simple_evaluate` with an `HFLM` wrapping that model and task YAMLs written by
`tests/harness_tasks.py`. Each side is timed per task, end to end from the loaded model
(documents read, prompts built, scored, aggregated); lm-eval's stderr bootstrap is off (bootstrap_iters=0).
The two alternate `--repeats` times per task (ours, lm-eval, ours, ...) and each side's median time counts: one
lm-eval run alone varies by +-15 % on a 2-core VM. Prints one line per task,
`TASK: ours X docs/s, lm-eval Y docs/s, R.Rx, max |diff| D (rel E)`: documents/s for each (medians), their
ratio, and the largest absolute and relative differences over the metrics both report. Without --model,
a randomly initialised tiny GPT-2 (GPT-2 tokenizer, n_positions 128) is built. Documents per task: --limit, or
LIMITS (a WikiText document is a whole article, ~4k tokens; MMLU's limit is per subject). glibc's allocator keeps
freed memory, as every `hf-ladder` command sets it (`hf_ladder.allocator`), for both sides.
A benchmark, not a test: the figures depend on the machine. Needs lm-eval (a dev dependency).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from hf_ladder import allocator  # noqa: E402
from hf_ladder.eval import benchmarks  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the lm-eval task YAMLs (a dev tool)
from harness_tasks import harness_metrics, write_harness_tasks  # noqa: E402

SUBJECTS = ["anatomy", "college_physics", "high_school_us_history", "marketing"]
LIMITS = {"wikitext": 12, "hellaswag": 200, "lambada_openai": 200, "mmlu": 50, "mmlu_5shot": 25}


def tiny_model(data_dir: Path):
    """A random 2-layer GPT-2 (n_embd 64, n_positions 128) with the GPT-2 tokenizer."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "gpt2-tokenizer")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=2)
    return GPT2LMHeadModel(config).eval(), tokenizer


def time_ours(model, tokenizer, task, limit, args) -> tuple[float, dict]:
    start = time.perf_counter()
    scores = benchmarks.evaluate(model, tokenizer, [task], args.data_dir, limit, SUBJECTS, args.batch_size,
                                 progress=False)[task]
    return time.perf_counter() - start, scores


def time_harness(lm, task_dir, name, limit) -> tuple[float, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    results = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=TaskManager(include_path=str(task_dir)),
                                      limit=limit, bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    return time.perf_counter() - start, harness_metrics(results, name)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model directory or Hub id (default: a tiny random GPT-2)")
    p.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--limit", type=int, help="documents per task (MMLU: per subject; default: LIMITS)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward, for both")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side per task, alternated (median)")
    p.add_argument("--tasks", nargs="+", default=list(benchmarks.BENCHMARKS), choices=list(benchmarks.BENCHMARKS))
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 is faster for tiny "
                                                "models on a busy machine)")
    args = p.parse_args()
    allocator.keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    from lm_eval.models.huggingface import HFLM

    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.model)
    else:
        model, tokenizer = tiny_model(args.data_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size, device="cpu")
    task_dir = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    names = write_harness_tasks(task_dir, args.data_dir, SUBJECTS)
    print(f"{args.model or 'tiny random GPT-2'}, batch {args.batch_size}, CPU {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; MMLU: {len(SUBJECTS)} subjects")
    for task in args.tasks:
        limit = args.limit or LIMITS[task]
        ours_t, theirs_t = [], []
        for _ in range(args.repeats):
            seconds, ours = time_ours(model, tokenizer, task, limit, args)
            ours_t.append(seconds)
            seconds, theirs = time_harness(lm, task_dir, names[task], limit)
            theirs_t.append(seconds)
        ours_s, theirs_s = statistics.median(ours_t), statistics.median(theirs_t)
        both = [(ours[k], v) for k, v in theirs.items() if k in ours and isinstance(v, float)]
        diff = max(abs(a - b) for a, b in both)
        rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in both)
        n = ours["n"]
        print(f"{task}: ours {n / ours_s:.1f} docs/s, lm-eval {n / theirs_s:.1f} docs/s, {theirs_s / ours_s:.1f}x, "
              f"max |diff| {diff:.2e} (rel {rel:.1e}; {n} docs, median of {args.repeats})", flush=True)


if __name__ == "__main__":
    main()
