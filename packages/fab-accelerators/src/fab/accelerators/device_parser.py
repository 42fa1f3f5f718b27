"""Parsing the ``devices`` argument of GPU accelerators.

Pure functions: the number of devices is passed in, so every form and every error can be tested
on a machine without a GPU. The accelerators call them with ``torch.cuda.device_count()`` (CUDA)
or with MPS's single device.

Accepted forms (those Lightning Fabric accepts for GPUs):

- ``N`` (an int above 0) or ``"N"``: the first N devices, indices ``0 .. N-1``;
- ``-1``, ``"-1"`` or ``"auto"``: every available device;
- ``[i, j]`` or ``(i, j)``: exactly these indices, in this order;
- ``"i,j"`` or ``"i,"``: indices as a string; a trailing comma makes ``"1,"`` the index 1.

``0``, ``"0"``, an empty list, negative or repeated indices, indices that do not exist, counts
above what is available and malformed strings raise ``ValueError``; a bool, float, ``None`` or a
list of non-integers raises ``TypeError``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["parse_cuda_devices", "parse_device_indices", "parse_mps_devices"]

_INDEX = re.compile(r"[0-9]+")
_ACCEPTED = (
    "a positive number of devices (int or digit string), -1 or 'auto' for all of them, or "
    "device indices as a list ([0, 1]) or a comma-separated string ('0,1', or '1,' for index 1)"
)


def parse_device_indices(
    devices: object, num_available: int, *, kind: str = "CUDA", note: str = ""
) -> list[int]:
    """The device indices that ``devices`` selects among ``num_available`` devices.

    ``kind`` names the devices in error messages (``"CUDA"``, ``"MPS"``) and ``note`` ends the
    errors about what is available (where the count comes from, say), after a semicolon. The
    result is never empty: every way of selecting no device raises.

    >>> parse_device_indices(2, num_available=4)
    [0, 1]
    >>> parse_device_indices("1,", num_available=4)
    [1]
    >>> parse_device_indices(-1, num_available=3)
    [0, 1, 2]
    """
    if num_available < 0:
        raise ValueError(f"num_available={num_available}; expected a count >= 0")
    note = f"; {note}" if note else ""
    if isinstance(devices, bool):
        raise TypeError(
            f"devices={devices!r} is a bool; expected {_ACCEPTED}. A bool is not taken as a count"
        )
    if isinstance(devices, str):
        return _parse_string(devices, num_available, kind, note)
    if isinstance(devices, int):
        return _parse_int(devices, devices, num_available, kind, note)
    if isinstance(devices, Sequence) and not isinstance(devices, bytes | bytearray):
        return _check_indices(devices, list(devices), num_available, kind, note)
    raise TypeError(f"devices={devices!r} ({type(devices).__name__}) is not accepted; {_ACCEPTED}")


def parse_cuda_devices(devices: object, num_available: int) -> list[int]:
    """``parse_device_indices`` for CUDA, where ``num_available`` is
    ``torch.cuda.device_count()``."""
    return parse_device_indices(
        devices,
        num_available,
        kind="CUDA",
        note="the count is torch.cuda.device_count(), which CUDA_VISIBLE_DEVICES limits",
    )


def parse_mps_devices(devices: object) -> list[int]:
    """``devices`` for MPS, which has one device: ``1``, ``"1"``, ``-1``, ``"-1"``, ``"auto"``,
    ``[0]`` or ``"0,"`` select it; anything else raises. Always ``[0]``.

    Whether MPS is available is not checked here (that is ``MPSAccelerator.is_available()``).
    """
    return parse_device_indices(
        devices, 1, kind="MPS", note="an Apple GPU is one MPS device: use devices=1"
    )


def _parse_string(devices: str, num_available: int, kind: str, note: str) -> list[int]:
    text = devices.strip()
    if text in ("auto", "-1"):
        return _all(devices, num_available, kind, note)
    if "," in text:
        parts = [part.strip() for part in text.split(",")]
        if any(not part for part in parts[:-1]) or not parts[0]:
            raise ValueError(f"devices={devices!r} has an empty entry; {_ACCEPTED}")
        indices = [part for part in parts if part]
        bad = [part for part in indices if not _INDEX.fullmatch(part)]
        if bad:
            raise ValueError(
                f"devices={devices!r}: {', '.join(map(repr, bad))} is not a device index "
                f"(a non-negative integer); {_ACCEPTED}"
            )
        return _check_indices(devices, [int(part) for part in indices], num_available, kind, note)
    if _INDEX.fullmatch(text):
        return _parse_int(devices, int(text), num_available, kind, note)
    raise ValueError(f"devices={devices!r} is not accepted; {_ACCEPTED}")


def _parse_int(given: object, count: int, num_available: int, kind: str, note: str) -> list[int]:
    if count == -1:
        return _all(given, num_available, kind, note)
    if count == 0:
        raise ValueError(
            f"devices={given!r} selects no {kind} device; give {_ACCEPTED}. "
            "To run on the CPU, use accelerator='cpu'"
            + (f". No {kind} device is available here{note}" if num_available == 0 else "")
        )
    if count < 0:
        raise ValueError(f"devices={given!r} is negative; only -1 (all devices) is; {_ACCEPTED}")
    if count > num_available:
        raise ValueError(
            f"devices={given!r} asks for {count} {kind} device{_s(count)}, but "
            f"{_available(num_available, kind)}{note}"
        )
    return list(range(count))


def _all(given: object, num_available: int, kind: str, note: str) -> list[int]:
    if num_available == 0:
        raise ValueError(
            f"devices={given!r} asks for every {kind} device, but none is available{note}"
        )
    return list(range(num_available))


def _check_indices(
    given: object, indices: Sequence[object], num_available: int, kind: str, note: str
) -> list[int]:
    if not indices:
        raise ValueError(f"devices={given!r} selects no {kind} device; give {_ACCEPTED}")
    out: list[int] = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"devices={given!r} holds {index!r} ({type(index).__name__}); device indices "
                "are ints"
            )
        if index < 0:
            raise ValueError(
                f"devices={given!r} holds the negative index {index}; device indices count "
                "from 0 (-1 for all devices is accepted only on its own: devices=-1)"
            )
        if index in out:
            raise ValueError(f"devices={given!r} lists the {kind} device {index} twice")
        out.append(index)
    missing = [index for index in out if index >= num_available]
    if missing:
        which = ", ".join(map(str, missing))
        valid = ""
        if num_available == 1:
            valid = " (index 0)"
        elif num_available > 1:
            valid = f" (indices 0 to {num_available - 1})"
        raise ValueError(
            f"devices={given!r} asks for the {kind} device{_s(len(missing))} {which}, but "
            f"{_available(num_available, kind)}{valid}{note}"
        )
    return out


def _available(num_available: int, kind: str) -> str:
    if num_available == 0:
        return f"no {kind} device is available"
    verb = "is" if num_available == 1 else "are"
    return f"only {num_available} {kind} device{_s(num_available)} {verb} available"


def _s(count: int) -> str:
    return "" if count == 1 else "s"
