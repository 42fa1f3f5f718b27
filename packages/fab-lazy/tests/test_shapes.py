"""Reporting which modules of a model are still lazy."""

from __future__ import annotations

import torch

from fab.lazy import has_uninitialized, uninitialized_modules


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8),
        torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.LazyLinear(3), torch.nn.LazyBatchNorm1d()),
    )


def test_lazy_modules_are_reported_by_name() -> None:
    model = make_model()
    assert uninitialized_modules(model) == ["2.0", "2.1"]
    assert has_uninitialized(model)


def test_nothing_is_reported_after_the_first_forward() -> None:
    model = make_model()
    model(torch.randn(5, 4))
    assert uninitialized_modules(model) == []
    assert not has_uninitialized(model)


def test_plain_models_have_nothing_uninitialized() -> None:
    assert uninitialized_modules(torch.nn.Linear(2, 2)) == []
