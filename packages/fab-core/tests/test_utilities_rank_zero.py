"""rank_zero_only and the rank_zero_* helpers: they act on global rank 0 only."""

from __future__ import annotations

import inspect
import logging
import warnings

import pytest

from fab.core.utilities import (
    FabDeprecationWarning,
    rank_prefixed_message,
    rank_zero_debug,
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)


@pytest.fixture(autouse=True)
def _rank_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 0)


def test_rank_zero_only_calls_the_function_on_rank_zero() -> None:
    assert rank_zero_only(lambda x: x + 1)(1) == 2


def test_rank_zero_only_returns_none_on_other_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    wrapped = rank_zero_only(calls.append)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert wrapped(1) is None
    assert calls == []


def test_rank_zero_only_returns_the_default_on_other_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wrapped = rank_zero_only(lambda: {"a": 1}, default={})
    assert wrapped() == {"a": 1}
    monkeypatch.setattr(rank_zero_only, "rank", 2)
    assert wrapped() == {}


def test_rank_zero_only_reads_the_rank_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = rank_zero_only(lambda: "ran")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert wrapped() is None
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert wrapped() == "ran"


def test_rank_zero_only_keeps_the_functions_name_and_doc() -> None:
    def documented() -> None:
        """Doc."""

    wrapped = rank_zero_only(documented)
    assert wrapped.__name__ == "documented"
    assert wrapped.__doc__ == "Doc."


def test_rank_zero_warn_warns_on_rank_zero_pointing_at_the_caller() -> None:
    with pytest.warns(UserWarning, match="careful") as record:
        rank_zero_warn("careful")
    assert record[0].filename == __file__


def test_rank_zero_deprecation_warns_a_deprecation_warning() -> None:
    with pytest.deprecated_call(match="old"):
        rank_zero_deprecation("old is deprecated")
    assert issubclass(FabDeprecationWarning, DeprecationWarning)


def test_rank_zero_deprecation_points_at_the_caller_of_the_deprecated_function() -> None:
    def deprecated_api() -> None:
        rank_zero_deprecation("deprecated_api is deprecated")

    call_line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.warns(FabDeprecationWarning) as record:
        deprecated_api()
    assert (record[0].filename, record[0].lineno) == (__file__, call_line)


def test_rank_zero_info_and_debug_log_to_the_fab_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="fab"):
        rank_zero_info("hello %s", "info")
        rank_zero_debug("hello %s", "debug")
    assert [r.getMessage() for r in caplog.records] == ["hello info", "hello debug"]
    assert all(r.pathname == __file__ for r in caplog.records)


def test_a_non_zero_rank_suppresses_every_rank_zero_helper(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, "fab"):
        warnings.simplefilter("always")
        rank_zero_warn("w")
        rank_zero_deprecation("d")
        rank_zero_info("i")
        rank_zero_debug("g")
    assert caught == []
    assert caplog.records == []


def test_rank_prefixed_message_names_a_known_rank() -> None:
    assert rank_prefixed_message("hi", 3) == "[rank: 3] hi"
    assert rank_prefixed_message("hi", None) == "hi"
