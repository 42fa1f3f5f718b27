"""tools/dev.py: which environment holds what, a set-up that is never silent, and `train` run from
another directory."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package
import dev


def layered_venv_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Path]]:
    """Record the plugins each environment would be built with, building nothing."""
    plugins_of: dict[str, list[Path]] = {}

    def record(session: dev.Session, key: str, venv: Path, *args: object, **_: object) -> Path:
        plugins = args[1]
        assert isinstance(plugins, list)
        plugins_of[key] = plugins
        session.venvs[key] = venv
        return venv

    monkeypatch.setattr(dev, "ensure_layered_venv", record)
    return plugins_of


def test_only_the_integration_environment_gets_the_example_plugins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugins_of = layered_venv_calls(monkeypatch)
    session = dev.Session(fresh=False, packages=dev.discover_packages())
    assert dev.ensure_dev_venv(session) == dev.DEV_VENV
    assert dev.ensure_integration_venv(session) == dev.INTEGRATION_VENV
    assert plugins_of["dev"] == []
    assert plugins_of["integration"] == dev.discover_plugins()
    assert any(p.name == "acme-fab-plugins" for p in plugins_of["integration"])


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != dev.DEV_VENV.resolve(),
    reason="checks the main job's environment (.venv), where tools/dev.py runs these tests",
)
def test_the_main_job_environment_holds_no_test_fixture() -> None:
    installed = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions()}
    assert "acme-fab-plugins" not in installed
    callbacks = importlib.metadata.entry_points(group="fab.callbacks")
    assert not list(callbacks), f"{dev.rel(dev.DEV_VENV)} holds callbacks: {list(callbacks)}"


def test_integration_tests_run_in_the_integration_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layered_venv_calls(monkeypatch)
    ran: dict[str, Path | None] = {}
    monkeypatch.setattr(dev, "pytest_step", lambda s, name, venv, *a: ran.update({name: venv}))
    session = dev.Session(fresh=False, packages=dev.discover_packages())
    opts = dev.build_parser().parse_args(["test", "--only", "integration,tools-tests"])
    dev.run_steps(session, ["integration", "tools-tests"], opts)
    assert ran == {"integration": dev.INTEGRATION_VENV, "tools-tests": dev.DEV_VENV}


def test_a_quiet_set_up_command_says_it_is_still_working(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dev, "HEARTBEAT_S", 0.05)
    with (tmp_path / "log").open("w", encoding="utf-8") as log:
        code = dev.run(
            [sys.executable, "-c", "import time; time.sleep(1)"],
            timeout=60,
            log=log,
            echo=False,
            heartbeat="installing into .venv",
        )
    assert code == 0
    assert "    installing into .venv ... " in capsys.readouterr().out


def test_train_runs_the_example_in_the_callers_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = tmp_path / "example.py"
    example.write_text(
        "import os, sys\nprint('cwd:', os.getcwd())\nprint('args:', sys.argv[1:])\n",
        encoding="utf-8",
    )
    fake_venv = tmp_path / "venv"
    dev.venv_python(fake_venv).parent.mkdir(parents=True)
    dev.venv_python(fake_venv).symlink_to(sys.executable)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(dev, "TRAIN_EXAMPLE", example)
    monkeypatch.setattr(dev, "LOG_DIR", tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    monkeypatch.setattr(dev, "ensure_dev_venv", lambda session: fake_venv)
    monkeypatch.chdir(elsewhere)

    assert dev.main(["train", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"cwd: {os.path.realpath(elsewhere)}" in out
    assert "args: ['--epochs', '1']" in out
    # Where the printed `tensorboard` and `fab` commands are, relative to the caller's directory.
    assert "`tensorboard` and `fab` are in ../venv/bin/" in out
