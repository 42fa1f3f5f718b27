"""fab.loggers re-exports fab-core's names, so users find them where they expect."""

from __future__ import annotations

import importlib
import subprocess
import sys

import fab.loggers


def test_public_names_are_fab_cores_objects() -> None:
    for name, core_module in {"Logger": "fab.core.loggers"}.items():
        assert getattr(fab.loggers, name) is getattr(importlib.import_module(core_module), name)
    own = ["CSVLogger", "MLFlowLogger", "TensorBoardLogger", "plot_csv"]
    assert sorted(fab.loggers.__all__) == sorted(["Logger", *own])


def test_fab_core_does_not_import_this_package() -> None:
    code = "import fab.core, sys; print(any(m.startswith('fab.loggers') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_package_is_a_namespace_portion() -> None:
    import fab

    assert not hasattr(fab, "__file__") or fab.__file__ is None
