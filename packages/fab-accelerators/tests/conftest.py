"""Fixtures for fab-accelerators' tests, which run on machines without a GPU: a fake CUDA device
count, and a check after every test that nothing initialized CUDA."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from fab.core import registry

SetDeviceCount = Callable[[int], None]


def cuda_initialized() -> bool:
    """``torch.cuda.is_initialized()`` (unannotated in torch), looked up at call time."""
    is_initialized: Callable[[], bool] = torch.cuda.is_initialized
    return is_initialized()


@pytest.fixture(autouse=True)
def _cuda_stays_uninitialized() -> Iterator[None]:
    """No test, nor anything it calls, initializes CUDA. The first fixture defined here, so it
    is torn down last, after every monkeypatch is undone."""
    assert not cuda_initialized()
    yield
    assert not cuda_initialized(), "the test initialized CUDA"


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees every installed plugin, whatever the environment switched off."""
    monkeypatch.delenv("FAB_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("FAB_DISABLED_PLUGINS", raising=False)
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()


@pytest.fixture
def cuda_device_count(monkeypatch: pytest.MonkeyPatch) -> SetDeviceCount:
    """Make ``torch.cuda.device_count()`` answer a given number (no CUDA is touched)."""

    def set_count(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return set_count
