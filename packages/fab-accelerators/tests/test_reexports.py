"""fab.accelerators re-exports fab-core's names, so users find them where they expect."""

from __future__ import annotations

import importlib
import subprocess
import sys

import fab.accelerators

PUBLIC_NAMES = {
    "Accelerator": "fab.core.accelerators",
    "CPUAccelerator": "fab.core.accelerators",
    "CUDAAccelerator": "fab.accelerators.cuda",
    "MPSAccelerator": "fab.accelerators.mps",
}


def test_public_names_are_the_defining_modules_objects() -> None:
    for name, module in PUBLIC_NAMES.items():
        assert getattr(fab.accelerators, name) is getattr(importlib.import_module(module), name)
    assert sorted(fab.accelerators.__all__) == sorted(PUBLIC_NAMES)


def test_fab_core_does_not_import_this_package() -> None:
    code = "import fab.core, sys; print(any(m.startswith('fab.accelerators') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_package_is_a_namespace_portion() -> None:
    import fab

    assert not hasattr(fab, "__file__") or fab.__file__ is None
