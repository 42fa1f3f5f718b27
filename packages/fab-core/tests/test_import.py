"""Importing fab.core is cheap: no torch._dynamo, no sympy, no L2 package, no plugin module."""

from __future__ import annotations

import json
import subprocess
import sys

L2_PREFIXES = ("fab.accelerators", "fab.strategies", "fab.precision", "fab.loggers")


def modules_after(code: str) -> list[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_fab_core_pulls_in_nothing_heavy() -> None:
    modules = modules_after("import fab.core")
    assert "torch._dynamo" not in modules
    assert "sympy" not in modules
    assert not [m for m in modules if m.startswith(L2_PREFIXES)]
    # fab-lazy's loader, materializer and dry run load when first used, not at import
    assert [m for m in modules if m.startswith("fab.lazy.")] == ["fab.lazy.errors"]


def test_a_cpu_fabric_imports_no_l2_package_nor_dynamo() -> None:
    code = "from fab.core import Fabric\nFabric(accelerator='cpu', strategy='single_device')"
    modules = modules_after(code)
    assert "torch._dynamo" not in modules
    assert not [m for m in modules if m.startswith(L2_PREFIXES)]


def test_version_is_the_distributions() -> None:
    from importlib.metadata import version

    import fab.core

    assert fab.core.__version__ == version("fab-core")
