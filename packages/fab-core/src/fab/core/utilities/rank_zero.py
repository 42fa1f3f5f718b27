"""Run, log or warn only on the global-zero process."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("fab")

#: Environment variables that launchers and schedulers set to a process's global rank.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


class FabDeprecationWarning(DeprecationWarning):
    """What ``rank_zero_deprecation`` warns with: a feature of fab that will go away."""


def _rank_from_environment() -> int | None:
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return None


@overload
def rank_zero_only(function: Callable[P, R]) -> Callable[P, R | None]: ...


@overload
def rank_zero_only(function: Callable[P, R], default: R) -> Callable[P, R]: ...


def rank_zero_only(function: Callable[P, R], default: R | None = None) -> Callable[P, R | None]:
    """Call ``function`` on global rank 0 only; other ranks get ``default`` (None by default).

    The rank is ``rank_zero_only.rank``, read when the call happens: Fabric sets it when its
    processes start; before that, it comes from the launcher's environment variables (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``), or is 0.
    """

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | None:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return function(*args, **kwargs)
        return default

    return wrapped


rank_zero_only.rank = _rank_from_environment() or 0  # type: ignore[attr-defined]


def rank_prefixed_message(message: str, rank: int | None) -> str:
    """``message`` with ``[rank: N] `` in front when the rank is known."""
    return message if rank is None else f"[rank: {rank}] {message}"


# Each rank_zero_* function below runs inside rank_zero_only's wrapper: a stacklevel of 3 names
# the code that called it (1 is the function itself, 2 the wrapper).


@rank_zero_only
def rank_zero_info(message: str, *args: Any, **kwargs: Any) -> None:
    """``logging.getLogger("fab").info(message, *args)`` on global rank 0 only."""
    kwargs.setdefault("stacklevel", 3)
    log.info(message, *args, **kwargs)


@rank_zero_only
def rank_zero_debug(message: str, *args: Any, **kwargs: Any) -> None:
    """``logging.getLogger("fab").debug(message, *args)`` on global rank 0 only."""
    kwargs.setdefault("stacklevel", 3)
    log.debug(message, *args, **kwargs)


@rank_zero_only
def rank_zero_warn(
    message: str | Warning, category: type[Warning] = UserWarning, stacklevel: int = 3
) -> None:
    """``warnings.warn`` on global rank 0 only; the warning points at the caller."""
    warnings.warn(message, category, stacklevel=stacklevel)


@rank_zero_only
def rank_zero_deprecation(
    message: str | Warning,
    category: type[Warning] = FabDeprecationWarning,
    stacklevel: int = 4,
) -> None:
    """Warn that something is deprecated, on global rank 0 only.

    Meant to be called by the deprecated function itself: the warning points at the code that
    called that function. ``FabDeprecationWarning`` is a ``DeprecationWarning``, so
    ``pytest.deprecated_call()`` and ``-W error::DeprecationWarning`` see it.
    """
    warnings.warn(message, category, stacklevel=stacklevel)
