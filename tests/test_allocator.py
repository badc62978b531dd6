"""hf_ladder.allocator: with glibc's thresholds raised, memory freed by one step is reused by the next without
page faults (the mechanism behind the pretrain stage's lower sys time; the figures are in bench/)."""

import os
import subprocess
import sys

import pytest

from hf_ladder.allocator import keep_freed_memory

# Allocate, touch and free 64 MiB five times through libc itself and count the minor page faults.
FAULTS = """
import ctypes, resource, sys
from hf_ladder.allocator import keep_freed_memory
print(keep_freed_memory(), file=sys.stderr)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
n = 64 << 20
def step():
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    libc.free(p)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(**env) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "HF_LADDER_MALLOPT"))}
    out = subprocess.run([sys.executable, "-c", FAULTS], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return int(out.stdout), out.stderr.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="glibc's mallopt")
def test_freed_memory_is_reused_without_page_faults():
    kept, was_set = faults()
    default, off = faults(HF_LADDER_MALLOPT="0")
    assert (was_set, off) == ("True", "False")
    pages = 5 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default >= pages  # glibc's default: every 64 MiB block is a fresh mmap, each page faults once
    assert kept < pages // 100


def test_user_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
