"""One process-wide CPU setting that matters for sampling: keep freed memory for reuse.

PyTorch frees every intermediate tensor as soon as it is dead, and glibc hands large freed blocks back to
the kernel (munmap, or trimming the heap top). The next decode step's tensors of the same size then
page-fault fresh zeroed pages, which are expensive on a VM. `keep_freed_memory()` asks glibc (mallopt) to
serve blocks up to 32 MiB from its heap and not to trim it, so freed memory is reused instead; PyTorch's
CPU tuning guide gets the same effect by preloading jemalloc or tcmalloc. It speeds up batched sampling
and leaves a training step as it was (BENCHMARKS.md, sections 1 and 2). It costs no extra peak memory:
memory freed below the peak stays mapped.

Called by `sample.generate` (and by the benchmarks, for ours and the baseline alike); idempotent; a no-op
where the C library is not glibc. Set TINYSTORIES_MALLOC=default in the environment to leave it alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2**30

_state: bool | None = None  # None: not tried yet; then whether the setting is in force


def keep_freed_memory() -> bool:
    """Tune glibc malloc as described above, once per process; returns whether it is in force."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if os.environ.get("TINYSTORIES_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return _state
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _state
