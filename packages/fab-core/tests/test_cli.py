"""The fab command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fab.core.cli import main


def test_plugins_lists_the_fallbacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["group", "name", "distribution", "target", "status"]
    for group, name in (
        ("accelerators", "cpu"),
        ("strategies", "single_device"),
        ("precision", "32-true"),
    ):
        assert any(
            line.split()[:2] == [group, name] and line.split()[-1] == "ok"
            for line in out.splitlines()
        )


def test_plugins_json_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json", "--group", "accelerators"]) == 0
    payload = json.loads(capsys.readouterr().out)
    cpu = next(p for p in payload["plugins"] if p["name"] == "cpu")
    assert cpu == {
        "group": "fab.accelerators",
        "name": "cpu",
        "distribution": "fab-core",
        "version": cpu["version"],
        "target": "fab.core.accelerators.cpu:CPUAccelerator",
        "status": "ok",
        "detail": "",
    }
    assert payload["conflicts"] == []


def test_plugins_no_load_imports_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json", "--no-load"]) == 0
    statuses = {p["status"] for p in json.loads(capsys.readouterr().out)["plugins"]}
    assert statuses <= {"ok", "not loaded"}


def test_version_lists_every_fab_package() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "fab.core.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "fab-core",
        "fab-wrappers",
        "fab-lazy",
        "fab-accelerators",
        "fab-strategies",
        "fab-precision",
        "fab-loggers",
    ]
    assert out.splitlines()[0].startswith("fab-core 0.")
