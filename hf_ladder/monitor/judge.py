"""The judge: a reference language model the ladder did not train, reading every sample.

judge_ppl = exp(-(1/N) * sum_i log p_judge(x_i | prompt, x_<i)) over the N judge tokens of a continuation: the
"generative perplexity" of MDLM (Sahoo et al. 2024, kuleshov-group/mdlm `compute_generative_perplexity`, with
GPT-2 large as the judge); here SmolLM2-135M-Instruct by default (`monitor.judge`, `eval.judge`). The prompt and
continuation are tokenized as lm-evaluation-harness tokenizes a (context, continuation) pair
(`hf_ladder.eval.loglikelihood.encode_pairs`), with the judge's own tokenizer, so judge_ppl compares samples of
models with different tokenizers.

Read it with rep_4: fluent text has a low judge perplexity, and so does a repetition loop ("region region ..."
surprises no language model), which rep_4 catches; gibberish of real-looking word pieces has a high one, which
the coherence score misses.
"""

from __future__ import annotations

import math
from functools import cache

from hf_ladder.eval.loglikelihood import encode_pairs
from hf_ladder.generate import continuation_losses
from hf_ladder.modeling import device, load_model, load_tokenizer


class Judge:
    """A loaded reference model (`source`: Hub id, folder, .gguf file or packaged GGUF name) that scores
    continuations. `perplexity(prompts, continuations)` -> judge_ppl per pair (see the module docstring)."""

    def __init__(self, source: str):
        self.source = source
        self.tokenizer = load_tokenizer(source)
        self.model = load_model(source).to(device()).eval()

    def perplexity(self, prompts: list[str], continuations: list[str]) -> list[float | None]:
        """judge_ppl of each continuation given its prompt; None for one with no token (an empty sample).

        Raises:
            ValueError: `prompts` and `continuations` differ in length.
        """
        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts for {len(continuations)} continuations")
        keep = [i for i, text in enumerate(continuations) if text.strip()]
        requests = encode_pairs(self.tokenizer, [(prompts[i], continuations[i]) for i in keep])
        out: list[float | None] = [None] * len(continuations)
        for i, loss in zip(keep, continuation_losses(self.model, requests, self.tokenizer)):
            out[i] = math.exp(loss)
        return out


@cache
def load_judge(source: str | None) -> Judge | None:
    """The judge of `source`, loaded once per process; None (said once) when there is none or it cannot load."""
    if not source:
        return None
    try:
        return Judge(source)
    except (OSError, ValueError, ImportError) as e:  # the package or the Hub is missing: samples go unjudged
        print(f"judge: {source} could not be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
              f"samples get no judge_ppl")
        return None
