"""Every reading of a sample, in one place: the monitor (while a stage trains) and the eval (every rung and
baseline) both call `read_samples`, and the `evaluate` modules in `hf_ladder/monitor/metrics/` wrap the same
functions for users' own generations.

    coherence    0-100, collapse vs. English-looking text       hf_ladder.monitor.coherence
    rep_4        seq-rep-4, duplicate 4-grams (loops)            hf_ladder.monitor.repetition (Welleck et al. 2019)
    distinct_2   distinct bigrams                               hf_ladder.monitor.repetition (Li et al. 2016)
    judge_ppl    perplexity under a model the ladder did not train  hf_ladder.monitor.judge (MDLM's generative ppl)
    loss_tier    the sample's own loss read as a tier           hf_ladder.monitor.tiers (the seed notes' table)
"""

from __future__ import annotations

from hf_ladder.monitor.coherence import coherence_score
from hf_ladder.monitor.judge import Judge
from hf_ladder.monitor.repetition import distinct_n, rep_n
from hf_ladder.monitor.tiers import loss_tier

FIELDS = ("coherence", "rep_4", "distinct_2", "judge_ppl", "loss_tier")


def read_samples(prompts: list[str], texts: list[str], losses: list[float | None],
                 judge: Judge | None) -> list[dict]:
    """The readings (FIELDS) of each (prompt, continuation, per-sample loss in nats/token); judge_ppl is None
    without a judge or for an empty continuation, loss_tier None without a loss."""
    judged = judge.perplexity(prompts, texts) if judge is not None else [None] * len(texts)
    return [{"coherence": round(coherence_score(text), 2), "rep_4": round(rep_n(text, 4), 4),
             "distinct_2": round(distinct_n(text, 2), 4),
             "judge_ppl": None if ppl is None else round(ppl, 3), "loss_tier": loss_tier(loss)}
            for text, loss, ppl in zip(texts, losses, judged)]
