"""`evaluate` module: seq-rep-n and distinct-n of generated texts (hf_ladder.monitor.repetition)."""

import datasets
import evaluate

from hf_ladder.monitor import repetition

_DESCRIPTION = """seq-rep-n: 1 - distinct n-grams / n-grams of one continuation (Welleck et al. 2019, section 5;
seq-rep-4 is their headline), and distinct-n: distinct n-grams / n-grams (Li et al. 2016), per text, over
lower-cased whitespace-separated words. A repetition loop has rep_4 near 1."""

_CITATION = """@inproceedings{welleck2019neural, title={Neural Text Generation with Unlikelihood Training},
author={Welleck, Sean and Kulikov, Ilia and Roller, Stephen and Dinan, Emily and Cho, Kyunghyun and Weston, Jason},
booktitle={ICLR}, year={2020}}
@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural Conversation Models},
author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill}, booktitle={NAACL},
year={2016}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    rep_n (int): n of seq-rep-n, default 4.
    distinct_n (int): n of distinct-n, default 2.
Returns:
    rep_<n>, distinct_<n> (lists of float, per text) and mean_rep_<n>, mean_distinct_<n>.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Repetition(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions, rep_n: int = 4, distinct_n: int = 2):
        reps = [repetition.rep_n(text, rep_n) for text in predictions]
        dist = [repetition.distinct_n(text, distinct_n) for text in predictions]
        return {f"rep_{rep_n}": reps, f"distinct_{distinct_n}": dist,
                f"mean_rep_{rep_n}": _mean(reps), f"mean_distinct_{distinct_n}": _mean(dist)}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
