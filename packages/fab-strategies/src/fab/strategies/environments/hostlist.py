"""Slurm's compressed host lists: ``node[01-03,07]``, ``a1,b[2-3]``, ``gpu-[1-2]x``,
``rack[1-2]-n[1-2]``."""

from __future__ import annotations

import itertools


def _split_top_level(text: str) -> list[str]:
    """Split at the commas that are outside brackets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"invalid host list {text!r}: nested '['")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"invalid host list {text!r}: ']' without '['")
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"invalid host list {text!r}: '[' without ']'")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_range(spec: str, hostlist: str) -> list[str]:
    """``01-03,07`` -> ``["01", "02", "03", "07"]``: the width of a lower bound is kept."""
    out: list[str] = []
    for item in spec.split(","):
        item = item.strip()
        low, sep, high = item.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"invalid host list {hostlist!r}: bad range '[{spec}]'")
        if not sep:
            out.append(low)
            continue
        if int(high) < int(low):
            raise ValueError(f"invalid host list {hostlist!r}: descending range '{item}'")
        width = len(low)
        out.extend(str(n).zfill(width) for n in range(int(low), int(high) + 1))
    return out


def _expand_host(pattern: str, hostlist: str) -> list[str]:
    pieces: list[list[str]] = []
    rest = pattern
    while rest:
        open_at = rest.find("[")
        if open_at < 0:
            pieces.append([rest])
            break
        close_at = rest.index("]", open_at)
        if open_at:
            pieces.append([rest[:open_at]])
        pieces.append(_expand_range(rest[open_at + 1 : close_at], hostlist))
        rest = rest[close_at + 1 :]
    return ["".join(combo) for combo in itertools.product(*pieces)]


def expand_hostlist(hostlist: str) -> list[str]:
    """Every host of a Slurm host list, in order.

    >>> expand_hostlist("node[01-03,07],login1")
    ['node01', 'node02', 'node03', 'node07', 'login1']
    """
    hosts: list[str] = []
    for pattern in _split_top_level(hostlist.strip()):
        hosts.extend(_expand_host(pattern, hostlist))
    return hosts


def first_host(hostlist: str) -> str:
    """The first host of a Slurm host list (rank 0's node)."""
    for pattern in _split_top_level(hostlist.strip()):
        # Expanding only the first pattern keeps this cheap for very large allocations.
        hosts = _expand_host(pattern, hostlist)
        if hosts:
            return hosts[0]
    raise ValueError(f"empty host list {hostlist!r}")
