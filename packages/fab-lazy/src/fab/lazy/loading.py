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

A file that cannot be read gets an error naming it and saying what is wrong: a
:class:`CheckpointFormatError` (a ``ValueError``) for an empty file, a truncated one (a save or a
copy that did not finish), one that is not a checkpoint at all, or a damaged one; an
:class:`UnsafeCheckpointError` only for a readable checkpoint that holds objects a weights-only
load refuses.

Mapped tensors are copy-on-write (``MAP_PRIVATE``): writing to one changes this process's copy,
never the file. Replacing the file by a rename (as fab's atomic save does) is safe while it is
mapped; truncating it in place is not.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fab.lazy.errors import CheckpointFormatError, UnsafeCheckpointError

PathLike = str | os.PathLike[str]
MapLocation = str | torch.device | None

_ZIP_MAGIC = b"PK\x03\x04"
#: How a legacy (pre-1.6, non-zip) torch checkpoint starts: the pickled magic number, protocol 2
#: (the default). Later protocols put a frame header before it, so its bytes are looked for in
#: the first ``_HEAD`` bytes.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_LEGACY_MAGIC_NUMBER = _LEGACY_MAGIC[4:]
_HEAD = 32
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
        head = f.read(_HEAD)
    if not head:
        raise CheckpointFormatError(
            f"{path} is empty (0 bytes): not a checkpoint. A save that was interrupted, or a "
            "file created but never written; save it again or use an earlier checkpoint"
        )
    if _looks_like_safetensors(head):
        tensors = load_safetensors(path)
        if map_location is not None and torch.device(map_location) != torch.device("cpu"):
            return {k: v.to(map_location) for k, v in tensors.items()}
        return tensors
    if not _looks_like_torch(head):
        raise CheckpointFormatError(
            f"{path} is not a checkpoint: it is neither a torch checkpoint (torch.save) nor a "
            f"safetensors file (it starts with the bytes {head[:8]!r})"
        )
    return _load_torch(path, map_location, weights_only, zip_format=head.startswith(_ZIP_MAGIC))


def _load_torch(
    path: Path, map_location: MapLocation, weights_only: bool, *, zip_format: bool
) -> dict[str, Any]:
    try:
        loaded = torch.load(
            path, map_location=map_location, weights_only=weights_only, mmap=zip_format
        )
    except pickle.UnpicklingError as err:
        if not weights_only or not _refused_as_unsafe(err):
            raise _damaged(path, err, zip_format) from err
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it holds objects that a weights-only load cannot "
            f"restore, and unpickling them could run code ({_reason(err)}). If you trust the "
            "file, load it with weights_only=False, or allow the types with "
            "torch.serialization.add_safe_globals."
        ) from err
    except (RuntimeError, EOFError, ValueError, KeyError, IndexError) as err:
        raise _damaged(path, err, zip_format) from err
    except OSError as err:  # mmap of a zip whose records point past the end: EINVAL
        if isinstance(err, PermissionError | FileNotFoundError | IsADirectoryError):
            raise
        raise _damaged(path, err, zip_format) from err
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} holds a {type(loaded).__name__}; expected a checkpoint dict")
    return loaded


def _looks_like_torch(head: bytes) -> bool:
    """A zip archive (torch.save's format since 1.6), or a legacy checkpoint: a pickle that
    starts with torch's magic number (or a file cut short inside it)."""
    if head.startswith(_ZIP_MAGIC) or _LEGACY_MAGIC.startswith(head):
        return True
    return head[:1] == b"\x80" and _LEGACY_MAGIC_NUMBER in head


def _refused_as_unsafe(err: pickle.UnpicklingError) -> bool:
    """Whether torch's weights-only unpickler refused an object it does not allow (a GLOBAL),
    rather than failing on bytes that are not a valid pickle (a damaged file)."""
    return "GLOBAL" in str(err)


def _damaged(path: Path, err: BaseException, zip_format: bool) -> CheckpointFormatError:
    """The error for a torch checkpoint that cannot be read: truncated, or damaged otherwise."""
    size = path.stat().st_size
    if zip_format and not _zip_is_complete(path):
        what = (
            f"{path} is truncated: a torch checkpoint (zip format) whose end is missing "
            f"({size} bytes). The save that wrote it did not finish, or a copy was cut short"
        )
    elif isinstance(err, EOFError) or "EOF" in str(err):
        what = f"{path} is truncated: its data ends early ({size} bytes)"
    else:
        what = f"{path} is a damaged torch checkpoint ({size} bytes)"
    return CheckpointFormatError(
        f"{what}; it cannot be loaded: save it again or use an earlier checkpoint "
        f"(torch: {type(err).__name__}: {_reason(err)[:200]})"
    )


def _zip_is_complete(path: Path) -> bool:
    """Whether the zip's central directory, written last, is there."""
    try:
        with zipfile.ZipFile(path):  # reads the central directory only
            return True
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _reason(err: BaseException) -> str:
    """The line of torch's error that says what is wrong (the object a weights-only load
    refused, or where the unpickler failed), without torch's boilerplate around it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for marker in ("GLOBAL", "WeightsUnpickler error:"):
        found = next((line for line in lines if marker in line), None)
        if found is not None:
            return found.split("WeightsUnpickler error:", 1)[-1].strip()
    return lines[0] if lines else repr(err)


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
        if header_size > _MAX_HEADER:
            raise CheckpointFormatError(f"{path} is not a safetensors file (bad header length)")
        if header_size > file_size - 8:
            raise CheckpointFormatError(
                f"{path} is truncated: a safetensors file whose header ({header_size} bytes) "
                f"runs past its end ({file_size} bytes)"
            )
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
    if 0 <= begin <= end and end - begin == nbytes and data_start + end > storage.nbytes():
        raise CheckpointFormatError(
            f"{path} is truncated: tensor {name!r} ({dtype_name}, shape {list(shape)}) ends at "
            f"byte {data_start + end}, past the end of the file ({storage.nbytes()} bytes)"
        )
    if not (0 <= begin <= end and end - begin == nbytes):
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
