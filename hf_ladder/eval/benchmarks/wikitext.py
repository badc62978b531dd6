"""WikiText-2 as lm-evaluation-harness 0.4.13 scores it: lm_eval/tasks/wikitext/wikitext.yaml and
preprocess_wikitext.py. Each article is scored whole with rolling windows after `detokenize`; word and byte counts
come from the original page: word_perplexity = exp(-sum ll / sum words), byte_perplexity = exp(-sum ll / sum
bytes), bits_per_byte = -sum ll / sum bytes / ln 2 (api/metrics.py:51-58, 468-470); the harness reports no
stderr for them. Our add-on: token_perplexity = exp(-sum ll / sum tokens).
Data: EleutherAI/wikitext_document_level, wikitext-2-raw-v1, test; or data_dir/wikitext-2/wiki.test.raw."""

from __future__ import annotations

import math
import re
from pathlib import Path

from hf_ladder.eval.loglikelihood import loglikelihood_rolling


def pages(raw: str) -> list[str]:
    """Articles of a WikiText raw file, split as the EleutherAI/wikitext_document_level loading script
    (wikitext_document_level.py `_generate_examples`).

    Lines are split on "\\n"; a line starts a new article when, after "= = =" -> "===" and "= =" -> "==" and
    strip(), it starts with "= " and ends with " =" (a level-1 heading " = Title = "). An article is its
    lines joined with "\\n", so it begins with its heading and ends with the blank line(s) before the next
    heading; text before the first heading is dropped when blank; the last article keeps the file's final
    empty line (ends with "\\n"). wikitext-2-raw-v1 test gives 62 articles.
    """
    out, lines = [], []
    for line in raw.split("\n"):
        heading = line.replace("= = =", "===").replace("= =", "==").strip()
        if heading.startswith("= ") and heading.endswith(" ="):
            page = "\n".join(lines)
            if page.strip():
                out.append(page)
            lines = []
        lines.append(line)
    out.append("\n".join(lines))
    return out


def load(data_dir: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """The first `limit` articles as {"page"} rows, from data_dir or the Hub."""
    if data_dir is None:
        from datasets import load_dataset

        return list(load_dataset("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", split="test"))[:limit]
    raw = (Path(data_dir) / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    return [{"page": page} for page in pages(raw)][:limit]


def detokenize(page: str) -> str:
    """The scored text of an article: a port of lm_eval/tasks/wikitext/preprocess_wikitext.py:4-36
    (`wikitext_detokenizer`), same replacements in the same order."""
    string = page
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def requests(doc: dict) -> list[tuple[str]]:
    """The harness's one (text,) rolling request."""
    return [(detokenize(doc["page"]),)]


def score(model, tokenizer, docs: list[dict], batch_size: int = 32, progress: bool = True,
          max_length: int | None = None) -> dict[str, float]:
    """word_perplexity, byte_perplexity, bits_per_byte, token_perplexity, n."""
    results = loglikelihood_rolling(model, tokenizer, [requests(d)[0][0] for d in docs], batch_size, progress,
                                    max_length)
    ll = sum(r[0] for r in results)
    words = sum(len(re.split(r"\s+", d["page"])) for d in docs)
    n_bytes = sum(len(d["page"].encode("utf-8")) for d in docs)
    tokens = sum(r[1] for r in results)
    return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / n_bytes),
            "bits_per_byte": -ll / n_bytes / math.log(2), "token_perplexity": math.exp(-ll / tokens),
            "n": len(docs)}
