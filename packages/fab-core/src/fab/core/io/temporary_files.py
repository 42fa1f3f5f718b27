"""The temporary files of atomic saves: named so that a later save can tell an abandoned one.

A save writes ``.<name>.fab-<host>-<pid>-<random>.tmp`` beside its target and renames it over
the target when complete. A process killed mid-save (``kill -9``, the out-of-memory killer)
leaves that file behind, possibly as large as the checkpoint. The next save to the same target
removes every such file whose writer, on this host, is no longer running; a file of a running
process (a save in progress) or of another host (a shared filesystem) is left alone.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

_SUFFIX = ".tmp"


def _host() -> str:
    """This host's name, reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", socket.gethostname())[:40] or "host"


def _prefix(target: Path) -> str:
    return f".{target.name}.fab-"


def create_temporary(target: Path) -> tuple[int, Path]:
    """Create a new temporary file beside ``target``; return its descriptor (open for writing)
    and its path.

    Created with mode 0o666 before the umask, like any new file (``tempfile.mkstemp`` would
    make it 0o600 and the checkpoint unreadable to the user's group).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = f"{_prefix(target)}{_host()}-{os.getpid()}-{os.urandom(4).hex()}{_SUFFIX}"
        tmp = target.with_name(name)
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {target}")


def remove_abandoned(target: Path) -> list[Path]:
    """Remove the temporary files that killed saves to ``target`` left behind; return them."""
    prefix = _prefix(target)
    pattern = re.compile(re.escape(prefix) + r"(?P<host>\w+)-(?P<pid>\d+)-[0-9a-f]+" + _SUFFIX)
    host = _host()
    removed: list[Path] = []
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for tmp in candidates:
        match = pattern.fullmatch(tmp.name)
        if match is None or match["host"] != host or _running(int(match["pid"])):
            continue
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue  # another process removed it first
        removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this host (one we may not signal counts too)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows, os.kill(pid, 0) would end it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
