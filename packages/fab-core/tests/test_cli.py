"""The fab command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fab.core.cli import main

MakeDistribution = Callable[..., Path]

VIZ_LOGGER = """
from fab.core.loggers import Logger

class VizLogger(Logger):
    name, version = "viz", 0

    def log_metrics(self, metrics, step=None):
        import a_plotting_library_that_is_not_installed  # imported on use, as plugins do

    def log_hyperparams(self, params, *args, **kwargs):
        pass
"""


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
        "missing": [],
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


def test_plugins_json_piped_into_head_exits_quietly() -> None:
    """`fab plugins --json | head -1`: the reader is gone before fab writes; no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # as head does once it has its line
    try:
        process = subprocess.run(
            [sys.executable, "-m", "fab.core.cli", "plugins", "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert process.returncode == 0
    assert process.stderr == ""


def test_plugins_marks_a_plugin_whose_library_is_missing(
    make_distribution: MakeDistribution, capsys: pytest.CaptureFixture[str]
) -> None:
    make_distribution(
        "viz-plugins",
        {
            "fab.loggers": {
                "viz": "viz_logger:VizLogger [plots]",
                "viz_plain": "viz_logger:VizLogger",
            }
        },
        {"viz_logger": VIZ_LOGGER},
        requires=(
            "torch>=1",
            'a-plotting-library-that-is-not-installed>=2; extra == "plots"',
            'torch>=1; extra == "plots"',
        ),
    )
    assert main(["plugins", "--json", "--no-load", "--group", "loggers"]) == 0
    payload = json.loads(capsys.readouterr().out)
    viz = next(p for p in payload["plugins"] if p["name"] == "viz")
    assert viz["status"] == "needs"
    assert viz["missing"] == ["a-plotting-library-that-is-not-installed>=2"]
    assert "viz_logger" not in sys.modules  # told from metadata, without importing the plugin

    assert main(["plugins", "--group", "loggers"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[:2] == ["loggers", "viz"])
    assert row.endswith("needs a-plotting-library-that-is-not-installed>=2")
    assert "viz_logger:VizLogger" in row
    assert "[plots]" not in row
    assert (
        "loggers:viz: needs a-plotting-library-that-is-not-installed>=2: pip install "
        '"viz-plugins[plots]"' in out
    )
    plain = next(line for line in out.splitlines() if line.split()[:2] == ["loggers", "viz_plain"])
    assert plain.endswith(" ok")


def test_a_plugin_whose_extra_is_installed_is_ok(
    make_distribution: MakeDistribution, capsys: pytest.CaptureFixture[str]
) -> None:
    make_distribution(
        "viz-plugins",
        {"fab.loggers": {"viz": "viz_logger:VizLogger [torchy]"}},
        {"viz_logger": VIZ_LOGGER},
        requires=('torch>=1; extra == "torchy"',),
    )
    assert main(["plugins", "--group", "loggers"]) == 0
    row = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if line.split()[:2] == ["loggers", "viz"]
    )
    assert row.endswith(" ok")
