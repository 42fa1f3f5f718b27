"""fab.core.utilities exports Lightning Fabric's utility names and stays cheap to import."""

from __future__ import annotations

import json
import subprocess
import sys

import fab.core.utilities

HEAVY = ("torch._dynamo", "sympy", "torch.utils.flop_counter")

#: Names that Fabric programs import from ``lightning.fabric.utilities``.
LIGHTNING_NAMES = {
    "AttributeDict",
    "Throughput",
    "ThroughputMonitor",
    "is_shared_filesystem",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "suggested_max_num_workers",
}


def heavy_modules_after(code: str) -> list[str]:
    script = (
        f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_importing_fab_core_imports_no_dynamo_sympy_nor_flop_counter() -> None:
    # fab.core imports fab.core.utilities, and with it every utility module
    assert heavy_modules_after("import fab.core\nimport fab.core.utilities") == []


def test_measure_flops_imports_the_flop_counter_only_when_called() -> None:
    code = (
        "import torch\nfrom fab.core.utilities import measure_flops\n"
        "m = torch.nn.Linear(2, 2)\nmeasure_flops(m, lambda: m(torch.ones(1, 2)))"
    )
    assert "torch.utils.flop_counter" in heavy_modules_after(code)


def test_all_names_lightnings_utilities_and_only_what_exists() -> None:
    exported = set(fab.core.utilities.__all__)
    assert exported >= LIGHTNING_NAMES
    assert all(hasattr(fab.core.utilities, name) for name in exported)
    assert len(exported) == len(fab.core.utilities.__all__)


def test_names_import_from_lightnings_module_paths_too() -> None:
    """``lightning.fabric.utilities.X import Y`` becomes ``fab.core.utilities.X import Y``."""
    from fab.core.utilities.apply_func import move_data_to_device
    from fab.core.utilities.data import AttributeDict, suggested_max_num_workers
    from fab.core.utilities.rank_zero import rank_zero_deprecation, rank_zero_only
    from fab.core.utilities.seed import reset_seed, seed_everything
    from fab.core.utilities.throughput import (
        Throughput,
        ThroughputMonitor,
        get_available_flops,
        measure_flops,
    )

    exported = {name: getattr(fab.core.utilities, name) for name in fab.core.utilities.__all__}
    for value in (
        move_data_to_device,
        AttributeDict,
        suggested_max_num_workers,
        rank_zero_deprecation,
        rank_zero_only,
        reset_seed,
        seed_everything,
        Throughput,
        ThroughputMonitor,
        get_available_flops,
        measure_flops,
    ):
        assert value is exported[value.__name__]
