"""What ``Fabric`` does around the processes of a run, for any strategy: the strategy's
``teardown`` runs when a launched process ends, and a launcher that cannot work in an interactive
session is refused there when the ``Fabric`` is created, with Lightning Fabric's error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import torch

from fab.core import Fabric
from fab.core.launchers import (
    Launcher,
    at_process_end,
    check_interactive_compatible,
    process_end,
    run_process_end_callbacks,
)
from fab.core.strategies import SingleDeviceStrategy

# -- teardown at the end of the process -----------------------------------------------------------

TEARDOWN_SCRIPT = textwrap.dedent(
    """
    import torch
    from fab.core import Fabric
    from fab.core.strategies import SingleDeviceStrategy

    class Noted(SingleDeviceStrategy):
        def teardown(self):
            print("teardown ran", flush=True)
            super().teardown()

    fabric = Fabric(accelerator="cpu", devices=1, strategy=Noted())
    fabric.launch()
    fabric.setup(torch.nn.Linear(2, 2))
    print("script done", flush=True)
    """
)


def test_a_launched_strategys_teardown_runs_once_when_the_process_ends() -> None:
    done = subprocess.run(
        [sys.executable, "-c", TEARDOWN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FAB_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["script done", "teardown ran"]


@pytest.fixture
def own_callbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run only this test's callbacks, not the teardowns other tests' launches registered."""
    monkeypatch.setattr(process_end, "_registered", [])


@pytest.mark.usefixtures("own_callbacks")
def test_process_end_callbacks_run_once_last_registered_first() -> None:
    calls: list[str] = []
    at_process_end(lambda: calls.append("first"))
    at_process_end(lambda: calls.append("second"))
    run_process_end_callbacks()
    run_process_end_callbacks()  # and atexit, later: nothing runs twice
    assert calls == ["second", "first"]


@pytest.mark.usefixtures("own_callbacks")
def test_a_forked_copy_does_not_run_the_callbacks_of_the_process_it_was_forked_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    at_process_end(lambda: calls.append("parent's"))
    parent = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: parent + 1)  # as seen from a forked child
    run_process_end_callbacks()
    assert calls == []


# -- interactive sessions ---------------------------------------------------------------------


class _Launcher(Launcher):
    def __init__(self, interactive_compatible: bool) -> None:
        self._interactive_compatible = interactive_compatible

    @property
    def is_interactive_compatible(self) -> bool:
        return self._interactive_compatible

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)


class _Launches(SingleDeviceStrategy):
    """A strategy whose launcher starts processes (as fab-strategies' do)."""

    def __init__(self, interactive_compatible: bool) -> None:
        super().__init__()
        self._interactive_compatible = interactive_compatible

    def configure_launcher(self) -> None:
        self._launcher = _Launcher(self._interactive_compatible)

    def __repr__(self) -> str:
        return f"_Launches({self._interactive_compatible})"


@pytest.fixture
def interactive(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process looks like a REPL or a notebook (both set ``sys.ps1``)."""
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)


@pytest.mark.usefixtures("interactive")
def test_a_launcher_that_is_not_interactive_compatible_is_refused_interactively() -> None:
    with pytest.raises(RuntimeError) as info:
        Fabric(accelerator="cpu", devices=1, strategy=_Launches(interactive_compatible=False))
    message = str(info.value)
    assert message.startswith(
        "`Fabric(strategy=_Launches(False))` is not compatible with an interactive environment. "
        "Run your code as a script, or choose one of the compatible strategies: "
        "`Fabric(strategy='ddp_notebook')`"
    )
    assert "make sure to include the Fabric creation inside the worker function" in message


@pytest.mark.usefixtures("interactive")
def test_an_interactive_compatible_launcher_or_none_is_accepted_interactively() -> None:
    fabric = Fabric(accelerator="cpu", devices=1, strategy=_Launches(interactive_compatible=True))
    assert fabric.launch(lambda f: f.world_size) == 1
    assert Fabric(accelerator="cpu", devices=1).strategy.launcher is None


def test_outside_an_interactive_session_every_launcher_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(sys, "ps1", raising=False)
    if sys.flags.interactive:
        pytest.skip("pytest itself runs in an interactive interpreter")
    check_interactive_compatible(_Launcher(interactive_compatible=False), "ddp")
    fabric = Fabric(accelerator="cpu", devices=1, strategy=_Launches(interactive_compatible=False))
    assert fabric.launch(lambda f: torch.ones(1).item()) == 1.0
