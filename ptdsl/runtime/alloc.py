"""The glibc allocator trap (PERF.md): glibc serves buffers above its mmap threshold (at
most 32 MiB) with mmap and unmaps them on free, and torch's CPU allocator does not cache,
so every large temporary of a training step (activations, logits) is page-faulted and
zero-filled again each step. `ptdsl.train` turns malloc's mmap path off at start-up, so
freed large buffers are reused from the heap. Peak memory is unchanged; memory freed after
the peak is kept by the process instead of returned to the system.

Linux with glibc only; a no-op elsewhere. Opt out with PTDSL_MALLOC_TUNING=0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_done = False


def tune_malloc() -> bool:
    """Serve large allocations from the heap and keep freed memory (glibc). True if applied."""
    global _done
    if _done:
        return True
    if os.environ.get("PTDSL_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no mallopt tunables of these)
    except (OSError, AttributeError):
        return False
    _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return _done
