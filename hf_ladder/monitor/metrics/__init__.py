"""The sample readings as Hugging Face `evaluate` modules, one folder each, loaded offline by path:

    import evaluate
    from hf_ladder.monitor.metrics import module_path
    rep = evaluate.load(module_path("repetition"))
    rep.compute(predictions=["the cat sat on the mat", "region region region region region"])
    # {'rep_4': [0.0, 0.5], 'distinct_2': [1.0, 0.25], 'mean_rep_4': 0.25, 'mean_distinct_2': 0.625}
    both = evaluate.combine([module_path("coherence"), module_path("repetition")])
    judge = evaluate.load(module_path("judge_perplexity"))
    judge.compute(predictions=[" Speak, if you can: what are you?"], prompts=["MACBETH:\n"])  # judge_ppl [107.0]

Each module's `_compute` calls the same function the monitor and the eval call (`hf_ladder.monitor.reading`).
"""

from __future__ import annotations

from pathlib import Path

MODULES = ("coherence", "repetition", "judge_perplexity")


def module_path(name: str) -> str:
    """The script of one module (`evaluate.load` takes the path of its .py file). Raises KeyError for others."""
    if name not in MODULES:
        raise KeyError(f"{name}: no such module; there are {', '.join(MODULES)}")
    return str(Path(__file__).parent / name / f"{name}.py")
