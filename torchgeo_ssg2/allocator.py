"""glibc's allocator settings for models whose activations are large blocks.

With glibc's defaults, a block above its mmap threshold (which grows with use up
to 32 MiB on 64-bit systems) is mapped from the operating system when allocated
and unmapped when freed. A forward pass whose activations are larger (a batch of
4 windows of 256² with 32 channels in float32 is 32 MiB) then page-faults every
one of them afresh, on every pass, which makes a small model several times slower
on the CPU (``benchmarks/README.md``). :func:`keep_freed_memory` raises both the
mmap and the trim thresholds, as the environment variables
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do before start-up, so
that freed blocks stay in the heap for the next pass. The process then keeps its
peak heap instead of handing freed memory back. The ``torchgeo-ssg2`` command
line calls it at start-up.
"""

import ctypes
import os
import sys

__all__ = ('ENVIRONMENT_VARIABLES', 'THRESHOLD', 'keep_freed_memory')

#: The mmap and trim thresholds set, in bytes.
THRESHOLD = 1 << 30

#: glibc's own variables for these settings; set either one and it is the user's.
ENVIRONMENT_VARIABLES = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_')

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Have glibc's allocator keep freed blocks up to *threshold* for reuse.

    Leaves the allocator alone where the process runs on another C library, or
    where ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is set (the
    user chose). With another allocator preloaded (jemalloc, tcmalloc) the call
    changes glibc's unused allocator only.

    Args:
        threshold: Bytes (at most 2**31 - 1): the largest block served from the
            heap, and the free memory the heap's top may keep.

    Returns:
        Whether the settings were changed.
    """
    if not sys.platform.startswith('linux'):
        return False
    if any(name in os.environ for name in ENVIRONMENT_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only; musl has no such knobs)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold)
    )
