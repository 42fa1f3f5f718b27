"""Run or print only on the global-zero process."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("fab")

#: Environment variables that launchers and schedulers set to a process's global rank.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def _rank_from_environment() -> int:
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def rank_zero_only(function: Callable[P, R]) -> Callable[P, R | None]:
    """Call ``function`` on global rank 0 only; other ranks get None.

    The rank is ``rank_zero_only.rank``: a strategy sets it when its processes start; before that,
    it is read from the launcher's environment variables.
    """

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | None:
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]
            return function(*args, **kwargs)
        return None

    return wrapped


rank_zero_only.rank = _rank_from_environment()  # type: ignore[attr-defined]


@rank_zero_only
def rank_zero_info(message: str, *args: Any, **kwargs: Any) -> None:
    log.info(message, *args, **kwargs)


@rank_zero_only
def rank_zero_debug(message: str, *args: Any, **kwargs: Any) -> None:
    log.debug(message, *args, **kwargs)


@rank_zero_only
def rank_zero_warn(
    message: str | Warning, category: type[Warning] = UserWarning, stacklevel: int = 3
) -> None:
    warnings.warn(message, category, stacklevel=stacklevel)
