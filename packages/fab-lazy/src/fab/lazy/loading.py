"""Deferred loading, the reading half: open a checkpoint without reading its tensors.

``lazy_load(path)`` returns the checkpoint's contents with every tensor memory-mapped from the
file: nothing of a tensor is read until it is used, and a tensor that is never used is never read.
Two formats:

- torch checkpoints (``torch.save``, zip format): ``torch.load(mmap=True, weights_only=True)``,
  which already maps every storage lazily and refuses pickles that would run code. A refusal
  becomes an :class:`UnsafeCheckpointError` naming the file and what to do. Files in the legacy
  (pre-1.6, non-zip) format cannot be mapped; they are read whole, still weights-only.
- safetensors files: read by this module (the format is a JSON header and raw data, so nothing
  can run code), each tensor a zero-copy view of the mapped file. No library is needed to read
  them; the ``safetensors`` package is needed only to write them.

Mapped tensors are copy-on-write (``MAP_PRIVATE``): writing to one changes this process's copy,
never the file. Replacing the file by a rename (as fab's atomic save does) is safe while it is
mapped; truncating it in place is not.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fab.lazy.errors import CheckpointFormatError, UnsafeCheckpointError

PathLike = str | os.PathLike[str]
MapLocation = str | torch.device | None

_ZIP_MAGIC = b"PK\x03\x04"
#: safetensors dtype names -> torch dtypes (those this torch has).
_SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    name: dtype
    for name, dtype in (
        ("F64", torch.float64),
        ("F32", torch.float32),
        ("F16", torch.float16),
        ("BF16", torch.bfloat16),
        ("I64", torch.int64),
        ("I32", torch.int32),
        ("I16", torch.int16),
        ("I8", torch.int8),
        ("U8", torch.uint8),
        ("BOOL", torch.bool),
        ("U16", getattr(torch, "uint16", None)),
        ("U32", getattr(torch, "uint32", None)),
        ("U64", getattr(torch, "uint64", None)),
        ("F8_E4M3", getattr(torch, "float8_e4m3fn", None)),
        ("F8_E5M2", getattr(torch, "float8_e5m2", None)),
    )
    if dtype is not None
}
#: A header larger than this is not a safetensors header (the format caps it at 100 MB).
_MAX_HEADER = 100_000_000


def lazy_load(
    path: PathLike, *, map_location: MapLocation = "cpu", weights_only: bool = True
) -> dict[str, Any]:
    """The contents of the checkpoint at ``path``, its tensors memory-mapped and read on use.

    ``path`` is a torch checkpoint (``torch.save``) or a ``.safetensors`` file; the format is
    told from the file's first bytes, not its name. ``weights_only=False`` allows a torch pickle
    to run code (only for files you trust). ``map_location`` moves each tensor as torch.load
    does; anything but the CPU reads every tensor at once.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory (a sharded checkpoint?); lazy_load reads single files"
        )
    with path.open("rb") as f:
        head = f.read(9)
    if _looks_like_safetensors(head):
        tensors = load_safetensors(path)
        if map_location is not None and torch.device(map_location) != torch.device("cpu"):
            return {k: v.to(map_location) for k, v in tensors.items()}
        return tensors
    return _load_torch(path, map_location, weights_only, mmap=head.startswith(_ZIP_MAGIC))


def _load_torch(
    path: Path, map_location: MapLocation, weights_only: bool, *, mmap: bool
) -> dict[str, Any]:
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=weights_only, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not weights_only:
            raise
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects that a weights-only load cannot "
            f"restore, and unpickling them could run code ({_reason(err)}). If you trust the "
            "file, load it with weights_only=False, or allow the types with "
            "torch.serialization.add_safe_globals."
        ) from err
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} holds a {type(loaded).__name__}; expected a checkpoint dict")
    return loaded


def _reason(err: Exception) -> str:
    """The line of torch's weights-only error that names the offending object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line), lines[0] if lines else repr(err))


# -- safetensors ---------------------------------------------------------------------------------


def _looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header's opening brace."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size <= _MAX_HEADER


def load_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each a zero-copy view of the memory-mapped file (on the
    CPU, read when used). The file's ``__metadata__`` is left out."""
    path = Path(path)
    file_size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointFormatError(f"{path} is not a safetensors file (too short)")
        header_size = int.from_bytes(raw, "little")
        if header_size > min(_MAX_HEADER, file_size - 8):
            raise CheckpointFormatError(f"{path} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointFormatError(f"{path}: unreadable safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointFormatError(f"{path}: a safetensors header must be a JSON object")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    data_start = 8 + header_size
    if not entries:
        return {}
    storage = torch.UntypedStorage.from_file(os.fspath(path), shared=False, nbytes=file_size)
    assert isinstance(storage, torch.UntypedStorage)
    return {name: _view(path, storage, data_start, name, entry) for name, entry in entries.items()}


def _view(
    path: Path, storage: torch.UntypedStorage, data_start: int, name: str, entry: Any
) -> torch.Tensor:
    try:
        dtype_name, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"{path}: malformed safetensors entry {name!r}") from err
    dtype = _SAFETENSORS_DTYPES.get(dtype_name)
    if dtype is None:
        raise CheckpointFormatError(
            f"{path}: tensor {name!r} has dtype {dtype_name!r}, which this torch cannot hold "
            f"(known: {', '.join(_SAFETENSORS_DTYPES)})"
        )
    numel = 1
    for dim in shape:
        numel *= int(dim)
    nbytes = numel * dtype.itemsize
    if not (0 <= begin <= end and end - begin == nbytes and data_start + end <= storage.nbytes()):
        raise CheckpointFormatError(
            f"{path}: tensor {name!r} ({dtype_name}, shape {list(shape)}) has data offsets "
            f"[{begin}, {end}) that do not match its size or lie outside the file"
        )
    if nbytes == 0:
        return torch.empty([int(d) for d in shape], dtype=dtype)
    window = storage[data_start + begin : data_start + end]  # shares the mapping
    assert isinstance(window, torch.UntypedStorage)
    view: Tensor = torch.empty(0, dtype=dtype).set_(window)
    return view.view([int(d) for d in shape])
