"""A sample's per-sample loss read as a quality tier, after the loss-tier table of the project's seed notes
(../shared/seeds/003_da3770af31b70459.txt, "A Reference Table"), drawn from a 120M-parameter model's samples.

    loss (nats/token)   tier
    < 0.13 ...          memorized substring   the model copies: check the training text (the memorization alert)
    0.13 - 0.30         recall                factual recall, mostly memorized
    0.30 - 0.70         textbook              a confident textbook one-liner
    0.70 - 1.0          constraint-following  constraint-following emerging
    1.0 - 2.0           imprecise             knowledgeable but imprecise
    2.0 - 3.0           vocabulary            learning the vocabulary distribution
    3.0 - 5.0           early                 early training, basic structure
    >= 5.0 (ln V: random over the vocabulary) random-ish, up to uniform guessing

The boundaries are that table's, for that model and its tokenizer: a reading aid, not a law. A sampled
continuation's loss under the model that wrote it measures how sure the model was, not whether the text is good.
"""

from __future__ import annotations

import math

TIERS = ((0.13, "memorized substring"), (0.30, "recall"), (0.70, "textbook"), (1.0, "constraint-following"),
         (2.0, "imprecise"), (3.0, "vocabulary"), (5.0, "early"), (math.inf, "random"))


def loss_tier(loss: float | None) -> str | None:
    """The tier of a per-sample loss in nats/token (see the module docstring); None for no loss (nan, None)."""
    if loss is None or not math.isfinite(loss):
        return None
    return next(name for bound, name in TIERS if loss < bound)
