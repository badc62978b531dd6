"""`evaluate` module: hf_ladder's coherence score of generated texts (hf_ladder.monitor.coherence)."""

import datasets
import evaluate

from hf_ladder.monitor.coherence import coherence_score

_DESCRIPTION = """A cheap 0-100 reading of whether a generated text is text or a collapse: 100 x the geometric mean of
word-bigram, word-trigram and character diversity, times the share of English dictionary words. Catches
repetition loops and sub-word gibberish; cannot tell fluent prose from plausible nonsense (read judge_perplexity
beside it)."""

_CITATION = """@misc{hf_ladder_coherence, title={hf_ladder coherence score}, note={hf_ladder/monitor/coherence.py;
after the coherence-gated early stopping of the project's seed notes}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
Returns:
    coherence (list of float): the score of each text, 0-100.
    mean_coherence (float): their mean.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Coherence(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions):
        scores = [coherence_score(text) for text in predictions]
        return {"coherence": scores, "mean_coherence": sum(scores) / len(scores) if scores else float("nan")}
