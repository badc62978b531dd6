"""Coherence score: a cheap 0-100 reading of whether a sample is text or a collapse.

Four signals, each in [0, 1]:
- bigram diversity: distinct word bigrams / all word bigrams (a repetition loop drives it to ~0);
- trigram diversity: the same for trigrams (catches longer loops: "and the king, and the king, ...");
- English-word presence: the fraction of words found in an English dictionary (pyspellchecker's packaged
  word-frequency list; words of one letter count only for "a", "i", "o", and rare two-letter fragments
  such as "th" do not count);
- character diversity: distinct non-space characters / 20, capped at 1 (a 100-character English passage
  uses well over 20; "region region region" uses 6).

score = 100 x (geometric mean of the three diversity signals) x (English-word presence).
The geometric mean lets any one collapsed diversity signal pull the score down; English-word presence
multiplies, so fluent-looking gibberish of sub-word pieces scores low too. The signals follow the
coherence-gated early stopping of the project's seed notes (bigram/trigram/English/character diversity,
auto-halt after 5 consecutive samples below 30).
"""

from __future__ import annotations

import re
from functools import cache

from hf_ladder.monitor.repetition import distinct_ngram_ratio

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
CHAR_DIVERSITY_FULL = 20  # distinct non-space characters that count as fully diverse
RARE_COUNT = 50  # pyspellchecker gives unseen fragments ("th", "nd") this floor count


@cache
def _dictionary():
    from spellchecker import SpellChecker

    return SpellChecker(language="en", distance=1).word_frequency


def is_english(word: str) -> bool:
    """Whether a lower-case word is in the English word list (short fragments excluded, see module doc)."""
    if len(word) == 1:
        return word in ("a", "i", "o")
    freq = _dictionary()
    base = word.split("'")[0] if "'" in word and word not in freq else word  # "lord's" -> "lord"
    if base not in freq:
        return False
    return len(base) > 2 or freq[base] > RARE_COUNT


def coherence_signals(text: str) -> dict[str, float]:
    """The four signals behind `coherence_score`, each in [0, 1]."""
    words = _WORD.findall(text.lower())
    chars = {c for c in text if not c.isspace()}
    return {
        "bigram_diversity": distinct_ngram_ratio(words, 2),
        "trigram_diversity": distinct_ngram_ratio(words, 3),
        "english_words": sum(map(is_english, words)) / len(words) if words else 0.0,
        "char_diversity": min(1.0, len(chars) / CHAR_DIVERSITY_FULL),
    }


def coherence_score(text: str) -> float:
    """Score a generated text from 0 (collapsed: loops, gibberish, nothing) to 100 (diverse English).

    Returns 0.0 for text without any word. See the module docstring for the formula.
    """
    s = coherence_signals(text)
    diversity = (s["bigram_diversity"] * s["trigram_diversity"] * s["char_diversity"]) ** (1 / 3)
    return 100.0 * diversity * s["english_words"]
