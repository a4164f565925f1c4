"""CPU training keeps freed tensor memory in the process instead of handing it back to the kernel.

glibc's malloc serves a block over its mmap threshold (128 KiB, rising adaptively to at most 32 MiB)
with a fresh `mmap` and unmaps it on `free`. PyTorch's CPU allocator is plain malloc, so every
activation over that size is faulted in page by page at every training step and unmapped again:
18,433 page faults and ~35 ms for one 75 MB (16,384 x 1,152 fp32) matmul output on this project's
KVM guest, where the product itself takes ~95 ms (nanoGPT's default Shakespeare shape has dozens
of such tensors a step). With mmap off (M_MMAP_MAX = 0) and heap trimming off (M_TRIM_THRESHOLD =
-1) big blocks come from the heap and a freed block is reused by the next step's tensor of the same
size: no faults in the steady state. The arithmetic is untouched; the resident set stays at the
step's peak between steps (which training reaches every step anyway). On leaving, glibc's defaults
come back and the free heap is trimmed. Elsewhere than glibc on Linux this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM, DEFAULT_MMAP_MAX = 128 * 1024, 65536  # glibc's defaults


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl has no libc.so.6)
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True):
    """Within the block, glibc serves big blocks from the heap and keeps freed ones (see above)."""
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, -1)
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM)
        libc.malloc_trim(0)
