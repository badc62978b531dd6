"""Pack tokenized documents into fixed-length blocks for causal-LM training (GPT-2's recipe)."""

from __future__ import annotations

import itertools

import torch
from datasets import Dataset


def pack(sequences: list[list[int]], block_size: int) -> torch.Tensor:
    """Concatenate the sequences and cut the stream into blocks; the last partial block is dropped.

    Returns:
        LongTensor (n_blocks, block_size).

    Raises:
        ValueError: the sequences hold fewer than `block_size` tokens.
    """
    stream = torch.tensor(list(itertools.chain.from_iterable(sequences)), dtype=torch.long)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(f"only {len(stream)} tokens, fewer than one block of {block_size}; "
                         f"add text or lower data.block_size")
    return stream[: n_blocks * block_size].view(n_blocks, block_size)


def lm_dataset(blocks: torch.Tensor) -> Dataset:
    """A `datasets.Dataset` of `input_ids` and `labels` (the same ids: the model shifts them itself)."""
    rows = blocks.tolist()
    return Dataset.from_dict({"input_ids": rows, "labels": rows}).with_format("torch")
