"""Keep glibc's malloc from handing a training step's large tensors back to the kernel.

By default glibc serves every allocation above its mmap threshold (128 KiB, rising with the sizes freed, to at
most 32 MiB) with a fresh `mmap` and returns it with `munmap` when freed, and trims the top of the heap above
128 KiB: a training step's activations and gradients are mapped again every step, and each new page faults.
On the 2-core CPU that is most of the `sys` time (pretrain, 400 steps: 12.3 s of sys, 8.1M minor faults; see
the performance issue's figures in bench/RESULTS.md). `mallopt(M_MMAP_THRESHOLD)` and
`mallopt(M_TRIM_THRESHOLD)` (glibc's `malloc(3)` tunables, the same as the environment variables
`MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`, but taking effect at run time) keep freed memory in the
process for the next step instead. The cost: the process's resident memory stays at its peak.

`hf-ladder` calls `keep_freed_memory()` first thing, so every command and every `accelerate launch` process gets
it without exporting anything. It does nothing off glibc, when the user set either variable (theirs wins), or
with `HF_LADDER_MALLOPT=0` (glibc's defaults: what bench/train_vs_bare.py compares against).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
THRESHOLD = 1 << 30  # bytes: allocations below 1 GiB come from the heap, and up to 1 GiB of free top stays mapped
ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to `threshold` bytes for this process.

    Returns:
        True when both were set; False on a libc without `mallopt` (musl, macOS), when glibc refused a value,
        when `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` is set in the environment (left as the user
        chose), or with `HF_LADDER_MALLOPT=0`.
    """
    if any(name in os.environ for name in ENV) or os.environ.get("HF_LADDER_MALLOPT") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, threshold))
