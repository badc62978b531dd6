"""Memorization check: does a sample copy the training text verbatim?

A hashed word n-gram index over the training documents (words lower-cased, punctuation ignored, so line
breaks and commas do not hide a copy). A sample's n-grams are looked up; a hit is extended word by word
as far as the sample and the training text agree, and the longest such span is reported with the
training passage it came from. The alert itself fires in the monitor only when the sample's per-sample
loss is also anomalously low (< `memorization_loss`, 0.20 nats/token by default): "check whether the
model is generating or copying".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_PRIME = np.uint64(1_000_003)


@dataclass
class Match:
    """A verbatim span shared by a sample and the training text."""

    words: int  # length of the span in words
    sample_span: str  # the span as it appears in the sample
    train_span: str  # the span as it appears in the training text
    train_doc: int  # index of the training document
    train_char: int  # character offset of the span in that document


def _words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    found = list(_WORD.finditer(text))
    return [m.group().lower() for m in found], [m.span() for m in found]


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every n-gram of word ids: (len(ids) - n + 1,) uint64 (wraps on overflow)."""
    h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h = h * _PRIME + ids[k: len(ids) - n + 1 + k].astype(np.uint64)
    return h


class NgramIndex:
    """Index the training documents' word n-grams; `find(sample)` returns the longest verbatim `Match`.

    Memory: about 40 bytes per training word (1.6M words of the embedded corpus: ~65 MB).
    """

    def __init__(self, docs: list[str], n: int = 8):
        self.n, self.docs = n, docs
        self.vocab: dict[str, int] = {}
        ids, self.doc_of, self.span_of = [], [], []
        for d, doc in enumerate(docs):
            words, spans = _words(doc)
            ids.extend(self.vocab.setdefault(w, len(self.vocab) + 1) for w in words)
            self.doc_of.extend([d] * len(words))
            self.span_of.extend(spans)
        self.ids = np.asarray(ids, dtype=np.int64)  # word ids of all documents, in order (1-based)
        hashes = _ngram_hashes(self.ids, n) if len(self.ids) >= n else np.zeros(0, dtype=np.uint64)
        self.order = np.argsort(hashes, kind="stable")
        self.sorted_hashes = hashes[self.order]

    def find(self, sample: str) -> Match | None:
        """The longest span of at least `n` words that `sample` shares verbatim with one training document."""
        words, spans = _words(sample)
        if len(words) < self.n or not len(self.sorted_hashes):
            return None
        ids = np.asarray([self.vocab.get(w, 0) for w in words], dtype=np.int64)  # 0: never in training
        hashes = _ngram_hashes(ids, self.n)
        where = np.searchsorted(self.sorted_hashes, hashes)
        best: Match | None = None
        i = 0
        while i < len(hashes):
            pos = int(where[i])
            if pos >= len(self.sorted_hashes) or self.sorted_hashes[pos] != hashes[i] or 0 in ids[i: i + self.n]:
                i += 1
                continue
            start = int(self.order[pos])  # word index in the training stream
            length = 0
            while (i + length < len(ids) and start + length < len(self.ids)
                   and ids[i + length] == self.ids[start + length]
                   and self.doc_of[start + length] == self.doc_of[start]):
                length += 1
            if length >= self.n and (best is None or length > best.words):
                doc = self.doc_of[start]
                a, b = self.span_of[start][0], self.span_of[start + length - 1][1]
                best = Match(words=length, sample_span=sample[spans[i][0]: spans[i + length - 1][1]],
                             train_span=self.docs[doc][a:b], train_doc=doc, train_char=a)
            i += max(length, 1)
        return best
