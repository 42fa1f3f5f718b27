"""fab.precision re-exports fab-core's names, so users find them where they expect."""

from __future__ import annotations

import importlib
import subprocess
import sys

import fab.precision

OWN = {
    "BitsandbytesPrecision": "fab.precision.bitsandbytes",
    "DoublePrecision": "fab.precision.double",
    "HalfPrecision": "fab.precision.half",
    "MixedPrecision": "fab.precision.amp",
    "TransformerEnginePrecision": "fab.precision.transformer_engine",
}


def test_public_names_are_fab_cores_objects() -> None:
    for name, core_module in {"Precision": "fab.core.precision"}.items():
        assert getattr(fab.precision, name) is getattr(importlib.import_module(core_module), name)


def test_every_precision_class_is_exported_from_the_package() -> None:
    for name, module in OWN.items():
        assert getattr(fab.precision, name) is getattr(importlib.import_module(module), name)
        assert issubclass(getattr(fab.precision, name), fab.precision.Precision)
    assert sorted(fab.precision.__all__) == sorted({"Precision", *OWN})


def test_fab_core_does_not_import_this_package() -> None:
    code = "import fab.core, sys; print(any(m.startswith('fab.precision') for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"


def test_importing_the_package_imports_no_optional_library() -> None:
    code = (
        "import fab.precision, sys; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('transformer_engine', 'bitsandbytes')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_package_is_a_namespace_portion() -> None:
    import fab

    assert not hasattr(fab, "__file__") or fab.__file__ is None
