"""Give back the resident pages of memory-mapped tensors once their data has been copied.

A tensor memory-mapped from a checkpoint costs resident memory only for the pages that were read;
after its data is copied into a model, those pages count again in the process's resident size
until the whole mapping goes. ``release`` asks the kernel to reclaim them (Linux
``madvise(MADV_PAGEOUT)``): only for tensors inside a file-backed mapping, and without losing
anything (a page that is read again comes back from the file). Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from bisect import bisect_right
from collections.abc import Callable

import torch

_MADV_PAGEOUT = 21  # Linux >= 5.4


class FileBackedPages:
    """The file-backed mappings of this process when created (from ``/proc/self/maps``)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._madvise = _libc_madvise()
        if self._madvise is None:
            return
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                lines = maps.read().splitlines()
        except OSError:
            return
        for line in lines:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or not fields[5].startswith("/") or fields[5].startswith("/dev/"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            self._starts.append(start)
            self._ends.append(end)

    def release(self, tensor: torch.Tensor) -> None:
        """Reclaim the whole pages of ``tensor``'s data if it lies in a file-backed mapping."""
        if self._madvise is None or tensor.device.type != "cpu" or not self._starts:
            return
        begin = tensor.data_ptr()
        end = begin + tensor.numel() * tensor.element_size()
        index = bisect_right(self._starts, begin) - 1
        if index < 0 or end > self._ends[index]:
            return
        page = mmap.PAGESIZE
        first, last = -(-begin // page) * page, end // page * page
        if last > first:
            self._madvise(first, last - first, _MADV_PAGEOUT)  # a failure leaves the pages


_Madvise = Callable[[int, int, int], int]


def _libc_madvise() -> _Madvise | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    madvise: _Madvise = function
    return madvise
