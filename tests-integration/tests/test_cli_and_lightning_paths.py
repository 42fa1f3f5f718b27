"""With every fab package installed: the names Lightning programs import from fab-strategies'
territory, the registry's hints, and `fab run` over two real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fab.core import Fabric, registry


def test_lightning_environment_is_fabs_own_where_lightning_has_it() -> None:
    from fab.core.plugins.environments import LightningEnvironment, SLURMEnvironment
    from fab.strategies.environments import FabEnvironment
    from fab.strategies.environments import LightningEnvironment as from_fab_strategies
    from fab.strategies.environments import SLURMEnvironment as slurm

    assert LightningEnvironment is FabEnvironment
    assert from_fab_strategies is FabEnvironment
    assert SLURMEnvironment is slurm


def test_strategy_registry_lists_fab_strategies() -> None:
    from fab.core.strategies import STRATEGY_REGISTRY

    assert {"ddp", "ddp_spawn", "single_device"} <= set(STRATEGY_REGISTRY.available_strategies())


def test_a_name_no_package_registers_gets_no_install_hint() -> None:
    """fab-strategies is installed here: asking for a strategy it does not have must not send
    the user to install it."""
    assert registry.STRATEGIES.entry("ddp").distribution == "fab-strategies"
    with pytest.raises(registry.PluginNotFoundError) as info:
        Fabric(accelerator="cpu", strategy="deepspeed")
    assert "pip install" not in str(info.value)
    assert "unknown strategy 'deepspeed'. Installed: " in str(info.value)


@pytest.mark.distributed
def test_fab_run_on_two_processes_shows_no_omp_banner(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import os, sys\n"
        "from fab.core import Fabric\n"
        "fabric = Fabric(accelerator='cpu')\n"
        "line = f\"{fabric.global_rank} {fabric.world_size} {os.environ['OMP_NUM_THREADS']}\\n\"\n"
        # one write of the whole line: the two ranks share the pipe, and print's separate writes
        # of each part interleave when stdout is unbuffered
        "sys.stdout.write(line)\n"
        "sys.stdout.flush()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-m", "fab.core.cli", "run", "--devices", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split("\n")[:2]) == ["0 2 1", "1 2 1"]  # torchrun's default kept
    assert "OMP_NUM_THREADS" not in result.stderr
