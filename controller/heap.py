"""The controller's C heap: one glibc arena, handed back after each deploy.

glibc gives each new thread an arena of its own (up to 8 per CPU), and a
process whose threads come and go (the controller's API starts one per
request) spreads its C allocations over all of them, each holding freed
memory at its own high-water mark; and what a deploy frees inside the heap
stays resident until ``malloc_trim`` gives it back. The controller's RSS
grew 12.6 MiB over 1,000 deploys with neither (``python -m bench.memory
1000``, issue 23). Python's small objects come from its own pools under the
GIL, so the controller loses nothing to one arena's lock. Not for the
workers: their C threads allocate per request, without the GIL.
"""
from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # (malloc.h)

_libc = ctypes.CDLL(None)


def one_arena() -> None:
    """Before the process starts threads: later threads share the main arena."""
    _libc.mallopt(M_ARENA_MAX, 1)


def give_back() -> None:
    """Return the heap's free pages to the kernel (a fraction of a millisecond)."""
    _libc.malloc_trim(0)
