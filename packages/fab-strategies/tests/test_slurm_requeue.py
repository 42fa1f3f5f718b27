"""SLURMEnvironment.install_requeue_handler(): a real signal to this process, a fake scontrol."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fab.strategies.environments import SLURMEnvironment

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGUSR1/SIGUSR2 are POSIX")


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``scontrol`` first on PATH that writes its arguments to a file."""
    log = tmp_path / "scontrol.log"
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    return log


@pytest.fixture
def env() -> Iterator[SLURMEnvironment]:
    environment = SLURMEnvironment()
    before = signal.getsignal(signal.SIGUSR1)
    yield environment
    environment.teardown()
    assert signal.getsignal(signal.SIGUSR1) == before  # the previous handler is back


def send(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the Python-level handler runs at the next bytecode boundary


def test_rank_zero_requeues(
    fake_scontrol: Path, env: SLURMEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_PROCID", "0")
    saved: list[bool] = []
    assert env.requeue_signal == signal.SIGUSR1
    assert env.install_requeue_handler(before_requeue=lambda: saved.append(True))
    send(signal.SIGUSR1)
    assert saved == [True]
    assert fake_scontrol.read_text().split() == ["requeue", "4242"]
    assert env.last_requeue is not None
    assert env.last_requeue.returncode == 0


def test_other_ranks_do_not_requeue(
    fake_scontrol: Path, env: SLURMEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_PROCID", "1")
    saved: list[bool] = []
    assert env.install_requeue_handler(before_requeue=lambda: saved.append(True))
    send(signal.SIGUSR1)
    assert saved == [True]
    assert not fake_scontrol.exists()


def test_array_job_and_another_signal(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4200")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    env = SLURMEnvironment(requeue_signal=signal.SIGUSR2)
    before = signal.getsignal(signal.SIGUSR2)
    try:
        assert env.install_requeue_handler()
        send(signal.SIGUSR2)
        assert fake_scontrol.read_text().split() == ["requeue", "4200_7"]
    finally:
        env.teardown()
    assert signal.getsignal(signal.SIGUSR2) == before


def test_off_or_outside_the_main_thread(fake_scontrol: Path) -> None:
    assert not SLURMEnvironment(auto_requeue=False).install_requeue_handler()
    results: list[bool] = []
    env = SLURMEnvironment()

    def install() -> None:
        with pytest.warns(RuntimeWarning, match="main thread"):
            results.append(env.install_requeue_handler())

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert results == [False]


def test_failed_scontrol_is_reported(
    fake_scontrol: Path,
    env: SLURMEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = fake_scontrol.parent / "bin" / "scontrol"
    script.write_text('#!/bin/sh\necho "no such job" >&2\nexit 1\n')
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env.install_requeue_handler()
    send(signal.SIGUSR1)
    assert env.last_requeue is not None
    assert env.last_requeue.returncode == 1
    assert "scontrol requeue 4242 failed (1): no such job" in capsys.readouterr().err
