"""``fab run``: its options come from the registry, they reach ``Fabric(...)`` through the
``FAB_CLI_*`` variables, and a value the code gives differently is an error. The multi-process
runs are tested in fab-strategies (tests/test_launchers_for_real.py); here fab-core alone."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fab.core import Fabric, registry
from fab.core.cli import main
from fab.core.cli_settings import CLIConflictError, cli_variables, from_environment, merge
from fab.core.precision.precision import Precision


@pytest.fixture(autouse=True)
def _no_cli_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FAB_CLI_"):
            monkeypatch.delenv(name)


def test_the_code_default_takes_the_command_lines_value() -> None:
    assert merge("devices", "auto", "2") == 2
    assert merge("accelerator", "auto", "cpu") == "cpu"
    assert merge("num_nodes", 1, "3") == 3
    assert merge("precision", None, "bf16-mixed") == "bf16-mixed"
    assert merge("precision", None, "16") == 16


def test_nothing_on_the_command_line_keeps_the_code() -> None:
    assert merge("devices", 4, None) == 4
    assert merge("strategy", "ddp", "auto") == "ddp"  # "auto" on the command line decides nothing


@pytest.mark.parametrize(
    ("name", "in_code", "from_cli"),
    [
        ("devices", 2, "2"),
        ("devices", [0, 1], "0,1"),
        ("devices", "0, 1", "0,1"),
        ("precision", 16, "16-mixed"),
        ("precision", "bf16", "bf16-mixed"),
        ("strategy", "ddp", "ddp"),
        ("num_nodes", 2, "2"),
    ],
)
def test_equal_values_written_differently_agree(name: str, in_code: object, from_cli: str) -> None:
    assert merge(name, in_code, from_cli) == in_code


def test_a_conflict_names_both_values_and_the_way_out() -> None:
    with pytest.raises(CLIConflictError) as caught:
        merge("devices", 4, "2")
    message = str(caught.value)
    assert "Fabric(devices=4) conflicts with `fab run --devices 2`" in message
    assert "Remove devices= from Fabric(...)" in message
    with pytest.raises(CLIConflictError, match=r"--precision 32-true"):
        merge("precision", "64-true", "32-true")
    with pytest.raises(CLIConflictError, match=r"--num-nodes 2"):
        merge("num_nodes", 4, "2")


def test_an_instance_in_code_conflicts_with_a_name_on_the_command_line() -> None:
    with pytest.raises(CLIConflictError, match=r"Fabric\(precision=.*--precision 32-true"):
        merge("precision", Precision(), "32-true")


def test_variables_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    variables = cli_variables({"devices": "2", "precision": "bf16-mixed"})
    assert variables == {"FAB_CLI_DEVICES": "2", "FAB_CLI_PRECISION": "bf16-mixed"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert from_environment() == {"devices": "2", "precision": "bf16-mixed"}


def test_fabric_takes_the_command_line_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAB_CLI_ACCELERATOR", "cpu")
    monkeypatch.setenv("FAB_CLI_PRECISION", "32")
    fabric = Fabric()
    assert fabric.device.type == "cpu"
    assert type(fabric.strategy.precision) is Precision


def test_fabric_refuses_a_value_that_disagrees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAB_CLI_DEVICES", "1")
    with pytest.raises(CLIConflictError, match=r"Fabric\(devices=2\) conflicts"):
        Fabric(accelerator="cpu", devices=2)


def test_run_offers_the_registrys_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option, name in (("accelerator", "cpu"), ("strategy", "single_device")):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"--{option} {{"))
        assert name in line
    assert "32-true" in text


def test_run_rejects_an_unknown_accelerator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.py"
    script.write_text("")
    assert main(["run", "--accelerator", "tpu9", str(script)]) == 2
    err = capsys.readouterr().err
    assert "fab run: --accelerator tpu9: unknown accelerator 'tpu9'. Installed: " in err
    assert "'cpu'" in err


def test_run_offers_only_installed_precisions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    offered = text.split("--precision {", 1)[1].split("}", 1)[0].split(",")
    installed = set(registry.PRECISION.names())
    aliases = {"16": "16-mixed", "32": "32-true", "64": "64-true", "bf16": "bf16-mixed"}
    assert set(offered) == installed | {a for a, name in aliases.items() if name in installed}


def _hide_distributions(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """As if ``names`` were not installed (they may be, in the all-packages environment)."""
    every = importlib.metadata.distributions

    def without(**kwargs: Any) -> list[importlib.metadata.Distribution]:
        return [d for d in every(**kwargs) if d.metadata["Name"] not in names]

    monkeypatch.setattr(importlib.metadata, "distributions", without)
    registry.refresh()


@pytest.mark.parametrize(
    ("options", "package"),
    [
        (["--devices", "2"], "fab-strategies"),
        (["--num-nodes", "2", "--main-port", "29391"], "fab-strategies"),
        (["--strategy", "ddp"], "fab-strategies"),
        (["--precision", "16"], "fab-precision"),
        (["--precision", "bf16-mixed"], "fab-precision"),
        (["--accelerator", "cuda"], "fab-accelerators"),
    ],
)
def test_a_request_for_a_missing_package_fails_before_any_process_starts(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    package: str,
) -> None:
    _hide_distributions(monkeypatch, "fab-strategies", "fab-precision", "fab-accelerators")
    started = tmp_path / "started"
    script = tmp_path / "script.py"
    script.write_text(f"open({str(started)!r}, 'w').close()\n")
    assert main(["run", *options, str(script)]) == 2
    err = capsys.readouterr().err
    assert f"pip install {package}" in err
    assert err.count("\n") == 1  # one message, no traceback
    assert not started.exists()


def test_devices_minus_one_is_refused_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.py"
    script.write_text("")
    assert main(["run", "--accelerator", "cpu", "--devices", "-1", str(script)]) == 2
    assert "devices=-1 ('every device') is not valid for the cpu accelerator" in (
        capsys.readouterr().err
    )


def test_ctrl_c_ends_fab_run_with_130_and_no_launcher_traceback(tmp_path: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: fab run and the
    script's process. The script here ends quietly on it, so any traceback would be fab run's."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, time\n"
        "from fab.core import Fabric\n"
        "Fabric()\n"
        "try:\n"  # 'ready' inside the try: a SIGINT right after it is the script's to catch
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "fab.core.cli", "run", "--accelerator", "cpu", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        env={**os.environ, "FAB_DISABLED_PLUGINS": "fab.environments:torchelastic"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "fab run: stopped by SIGINT; every process was stopped" in err


def test_run_needs_an_existing_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "missing.py")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_refuses_a_busy_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "script.py"
    script.write_text("print('never runs')\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["run", "--main-port", str(port), str(script)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "--main-port" in err


def test_run_rejects_a_node_rank_beyond_the_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "script.py"
    script.write_text("")
    assert main(["run", "--num-nodes", "2", "--node-rank", "2", str(script)]) == 2
    assert "--node-rank 2 is not below --num-nodes 2" in capsys.readouterr().err


def test_run_one_process_with_fab_core_alone(tmp_path: Path) -> None:
    """With only fab-core installed ``fab run`` starts one process, and Fabric takes the command
    line's settings."""
    script = tmp_path / "script.py"
    script.write_text(
        "from fab.core import Fabric\n"
        "import sys\n"
        "f = Fabric()\n"
        "print(f.world_size, f.device, type(f.strategy).__name__, sys.argv[1:])\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "fab.core.cli", "run", "--accelerator", "cpu", str(script), "a"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FAB_DISABLED_PLUGINS": "fab.environments:torchelastic"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "cpu", "SingleDeviceStrategy", "['a']"]
