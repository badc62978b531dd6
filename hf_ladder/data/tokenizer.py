"""Tokenizers: train a byte-level BPE on the training split with `tokenizers`, or reuse one by id or path.

The trained tokenizer is saved as a `transformers` fast tokenizer with distinct bos / eos / pad tokens; it
puts bos in front of every text it encodes (as Llama's do), so a model always starts from the same context
in training, scoring and generation. Two chat markers are reserved now so the SFT stage's chat template
needs no new embeddings.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hf_ladder.modeling import load_tokenizer
from hf_ladder.schema import RecipeError, TokenizerConfig

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
CHAT_MARKERS = ["<|im_start|>", "<|im_end|>"]


def train_bpe(texts: list[str], vocab_size: int, min_frequency: int = 2,
              model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE (every byte is in the alphabet, so nothing is ever unknown).

    Args:
        texts: training documents (never the validation split).
        vocab_size: total size including the 256 byte symbols and the special tokens.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[BOS, EOS, PAD, *CHAT_MARKERS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer, length=len(texts))
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B:1",
                                      special_tokens=[(BOS, tok.token_to_id(BOS))]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=CHAT_MARKERS, model_max_length=model_max_length)


def get_tokenizer(cfg: TokenizerConfig, train_texts: list[str], model_max_length: int) -> PreTrainedTokenizerBase:
    """The recipe's tokenizer: `cfg.path` (Hub id or directory) if given, else a BPE trained on `train_texts`.

    A reused tokenizer without a pad token gets eos as pad (enough for packed pretraining; SFT checks
    that they differ).
    """
    if cfg.path is None:
        return train_bpe(train_texts, cfg.vocab_size, cfg.min_frequency, model_max_length)
    tok = load_tokenizer(cfg.path)
    if tok.eos_token is None:
        raise RecipeError(f"tokenizer.path: {cfg.path} has no eos token; the ladder separates documents with it")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts bos in front of what it encodes (the ladder's BPE does; GPT-2's does not)."""
    return tokenizer.bos_token_id is not None and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]


def with_bos(tokenizer, text: str) -> str:
    """`text` with the bos token written in front when the tokenizer adds bos by itself.

    TRL tokenizes prompts without special tokens (to avoid a double bos under chat templates); writing bos
    into the text gives SFT and DPO the same sequence start as pretraining, scoring and generation.
    """
    if adds_bos(tokenizer) and not text.startswith(tokenizer.bos_token):
        return tokenizer.bos_token + text
    return text


def encode_documents(tokenizer: PreTrainedTokenizerBase, docs: list[str]) -> list[list[int]]:
    """Token ids per document, each ending with eos (and starting with bos where the tokenizer adds it)."""
    ids = tokenizer(docs, add_special_tokens=True, verbose=False)["input_ids"]
    return [seq + [tokenizer.eos_token_id] for seq in ids]
