"""Repetition of a continuation: seq-rep-n and distinct-n, over its tokens (whitespace-separated words).

- rep_n = 1 - |distinct n-grams| / |n-grams| of one continuation ("seq-rep-n", Welleck et al. 2019, "Neural
  Text Degeneration with Unlikelihood Training", section 5: the portion of duplicate n-grams in a continuation;
  they report seq-rep-4). 0 = no n-gram repeats; "region region region ..." -> ~1.
- distinct_n = |distinct n-grams| / |n-grams| (Li et al. 2016, "A Diversity-Promoting Objective Function for
  Neural Conversation Models"), here per continuation.
A text with fewer than n words has no n-gram: rep_n = 0, distinct_n = 1 (nothing repeats).
Words are lower-cased and split on whitespace, so "Lord," and "lord," match but punctuation is kept.
"""

from __future__ import annotations


def distinct_ngram_ratio(words: list[str], n: int) -> float:
    """Distinct n-grams / n-grams of a word list, in [0, 1]; 1.0 when it is too short to hold an n-gram."""
    grams = [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def distinct_n(text: str, n: int = 2) -> float:
    """distinct-n of `text` (lower-cased, whitespace-separated words), in [0, 1]; 1.0 when it has no n-gram."""
    return distinct_ngram_ratio(text.lower().split(), n)


def rep_n(text: str, n: int = 4) -> float:
    """seq-rep-n (Welleck et al. 2019): 1 - distinct_n, in [0, 1); 0.0 when `text` has no n-gram."""
    return 1.0 - distinct_n(text, n)
