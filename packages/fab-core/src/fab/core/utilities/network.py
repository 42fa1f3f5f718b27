"""Ports on this machine: a free one for a rendezvous, and a clear error for a busy one."""

from __future__ import annotations

import errno
import socket


def find_free_port() -> int:
    """A TCP port that is free on every interface of this machine right now.

    The port is released before returning, so another process may take it before it is used;
    the rendezvous on rank 0 binds it soon after.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


class PortInUseError(RuntimeError):
    """The rendezvous port the run was told to use is taken on this machine."""


def ensure_port_free(address: str, port: int, *, hint: str) -> None:
    """Raise :class:`PortInUseError` if ``port`` is taken on this machine and ``address`` is one
    of this machine's addresses (the rendezvous of rank 0 will listen there).

    An address that belongs to another machine is not checked: its port is that machine's
    business. ``hint`` says how to choose another port.
    """
    if not _is_local(address):
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The rendezvous server sets SO_REUSEADDR too: a port in TIME_WAIT is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise PortInUseError(
                f"port {port} on {address} is already in use (another run, or a process that "
                f"has not exited yet, listens on it), so the processes of this run cannot meet "
                f"there. {hint}"
            ) from None


def _is_local(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True
