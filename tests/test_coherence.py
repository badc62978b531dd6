"""The coherence score separates collapse from text, on real held-out Shakespeare."""

import random

import pytest

from hf_ladder.data.corpus import load_play, tail_split
from hf_ladder.monitor import coherence_score
from hf_ladder.monitor.coherence import coherence_signals


@pytest.mark.parametrize("loop", ["region " * 60, "games, " * 60, "and the king, " * 30,
                                  "To be or not to be. " * 20, "the the the the the the the the"])
def test_repetition_loops_score_below_30(loop):
    assert coherence_score(loop) < 30


def test_nothing_and_punctuation_score_zero():
    assert coherence_score("") == 0.0
    assert coherence_score(",,,,\n\n!!!") == 0.0


def test_held_out_shakespeare_plays_score_above_60():
    # the embedded corpus' validation plays, in 300-character windows
    for name in ("macbeth", "the-tempest"):
        text = load_play(name).text()
        scores = [coherence_score(text[i: i + 300]) for i in range(0, len(text) - 300, 3000)]
        assert len(scores) > 20
        assert min(scores) > 60, (name, min(scores))


def test_tinyshakespeare_validation_split_scores_above_60(data_dir):
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    _, (validation,) = tail_split([text], 0.1)
    scores = [coherence_score(validation[i: i + 300]) for i in range(0, len(validation) - 300, 300)]
    assert len(scores) > 300
    assert min(scores) > 60


def test_random_subword_soup_scores_well_below_real_text(data_dir):
    # GPT-2's tokenizer decodes random token ids into fluent-looking sub-word soup
    import json

    vocab = list(json.loads((data_dir / "gpt2-tokenizer" / "vocab.json").read_text()))
    rng = random.Random(0)
    soup = "".join(rng.choice(vocab) for _ in range(80)).replace("Ġ", " ").replace("Ċ", "\n")
    real = load_play("macbeth").text()[5000:5400]
    assert coherence_score(soup) < coherence_score(real) - 25
    assert coherence_signals(soup)["english_words"] < coherence_signals(real)["english_words"]
