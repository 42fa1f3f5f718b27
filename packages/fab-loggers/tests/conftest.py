"""Fixtures for fab-loggers' tests: every test runs as global rank 0 unless it says otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fab.core.utilities.rank_zero import rank_zero_only


@pytest.fixture(autouse=True)
def _rank_zero() -> Iterator[None]:
    saved = rank_zero_only.rank  # type: ignore[attr-defined]
    rank_zero_only.rank = 0  # type: ignore[attr-defined]
    yield
    rank_zero_only.rank = saved  # type: ignore[attr-defined]


@pytest.fixture
def as_rank_one() -> Iterator[None]:
    """Run the test as global rank 1 of a multi-process run."""
    rank_zero_only.rank = 1  # type: ignore[attr-defined]
    yield
    rank_zero_only.rank = 0  # type: ignore[attr-defined]
