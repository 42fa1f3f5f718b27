"""fab.strategies re-exports fab-core's names, so users find them where they expect."""

from __future__ import annotations

import importlib
import subprocess
import sys

import fab.strategies

CORE_NAMES = {
    "ClusterEnvironment": "fab.core.environments",
    "Launcher": "fab.core.launchers",
    "SingleDeviceStrategy": "fab.core.strategies",
    "Strategy": "fab.core.strategies",
}
ENVIRONMENT_NAMES = [
    "FabEnvironment",
    "KubeflowEnvironment",
    "LSFEnvironment",
    "MPIEnvironment",
    "SLURMEnvironment",
    "TorchElasticEnvironment",
    "detect_environment",
]
STRATEGY_NAMES = [
    "DDPStrategy",
    "FSDPStrategy",
    "ModelParallelStrategy",
    "MultiProcessingLauncher",
    "ParallelStrategy",
]


def test_public_names_are_fab_cores_objects() -> None:
    for name, core_module in CORE_NAMES.items():
        assert getattr(fab.strategies, name) is getattr(importlib.import_module(core_module), name)
    assert sorted(fab.strategies.__all__) == sorted(
        [*CORE_NAMES, *ENVIRONMENT_NAMES, *STRATEGY_NAMES]
    )


def test_strategies_are_exported() -> None:
    from fab.strategies.ddp import DDPStrategy
    from fab.strategies.launchers import MultiProcessingLauncher
    from fab.strategies.parallel import ParallelStrategy

    assert fab.strategies.DDPStrategy is DDPStrategy
    assert fab.strategies.ParallelStrategy is ParallelStrategy
    assert fab.strategies.MultiProcessingLauncher is MultiProcessingLauncher


def test_environments_are_exported() -> None:
    import fab.strategies.environments as environments

    for name in ENVIRONMENT_NAMES:
        assert getattr(fab.strategies, name) is getattr(environments, name)
    assert sorted(environments.__all__) == sorted(
        [
            *ENVIRONMENT_NAMES,
            "ClusterEnvironment",
            "FAB_LAUNCHED_ENV",
            "expand_hostlist",
            "find_free_port",
        ]
    )
    assert environments.ClusterEnvironment is fab.strategies.ClusterEnvironment


def test_fab_core_does_not_import_this_package() -> None:
    code = "import fab.core, sys; print(any(m.startswith('fab.strategies') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_package_is_a_namespace_portion() -> None:
    import fab

    assert not hasattr(fab, "__file__") or fab.__file__ is None
