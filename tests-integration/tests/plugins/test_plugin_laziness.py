"""Plugins are data until used: importing fab.core and listing plugin names import no plugin, and
the installed distributions are scanned once per process.

Each check runs in a fresh Python, since this process has long imported everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

#: The import names of fab's L2 packages (plugin providers), which fab.core must never import.
L2_PACKAGES = ("fab.accelerators", "fab.strategies", "fab.precision", "fab.loggers")
#: Heavy modules that `import fab.core` must not reach.
HEAVY_MODULES = ("torch._dynamo", "sympy")

IMPORTS_AFTER_LISTING = """
import sys

def loaded(*prefixes):
    return sorted(m for m in sys.modules if m.startswith(prefixes))

watched = WATCHED
import fab.core
after_import = loaded(*watched)

from fab.core import registry
names = {}
for group in registry.GROUPS:
    plugins = registry.get_registry(group)
    names[group] = plugins.names()
    for name in names[group]:
        assert name in plugins
        plugins.entry(name)
    plugins.conflicts()
    plugins.records(load=False)
after_listing = loaded(*watched)

registry.ACCELERATORS.load("acme")
after_loading_one = loaded(*watched)
report({
    "after_import": after_import,
    "after_listing": after_listing,
    "after_loading_one": after_loading_one,
    "names": names,
})
""".replace("WATCHED", repr(("acme_fab", *L2_PACKAGES, *HEAVY_MODULES)))


@pytest.fixture(scope="module")
def fresh_process_imports(run_python: Callable[..., Any]) -> dict[str, Any]:
    """What a fresh Python has imported after `import fab.core`, and after listing every plugin
    name (names, membership, entries, conflicts, records without loading) of every group."""
    result: dict[str, Any] = run_python(IMPORTS_AFTER_LISTING)
    return result


def test_import_fab_core_imports_no_plugin_no_l2_package_no_dynamo_no_sympy(
    fresh_process_imports: dict[str, Any],
) -> None:
    assert fresh_process_imports["after_import"] == []


def test_listing_names_imports_no_plugin_module(fresh_process_imports: dict[str, Any]) -> None:
    names = fresh_process_imports["names"]
    # The listing really saw the third-party plugins, the broken ones included ...
    assert {"acme", "cpu"} <= set(names["fab.accelerators"])
    assert {"acme_single", "acme_missing_dep", "acme_not_a_strategy", "single_device"} <= set(
        names["fab.strategies"]
    )
    assert "acme_counter" in names["fab.callbacks"]
    # ... without importing any of them, nor any L2 package that provides plugins.
    assert fresh_process_imports["after_listing"] == []


def test_loading_one_plugin_imports_only_that_plugins_module(
    fresh_process_imports: dict[str, Any],
) -> None:
    assert fresh_process_imports["after_loading_one"] == ["acme_fab", "acme_fab.accelerator"]


def test_one_scan_of_installed_distributions_per_process(run_python: Callable[..., Any]) -> None:
    result = run_python(
        """
        import importlib.metadata
        import traceback

        import torch  # torch itself reads entry points (device backends) when imported

        callers = []
        original = importlib.metadata.distributions

        def counting(*args, **kwargs):
            callers.append("".join(traceback.format_stack(limit=4)[:-1]))
            return original(*args, **kwargs)

        importlib.metadata.distributions = counting

        import contextlib
        import io
        import warnings

        from fab.core import Fabric, registry
        from fab.core.cli import main

        warnings.simplefilter("ignore")
        for _ in range(3):
            for group in registry.GROUPS:
                plugins = registry.get_registry(group)
                for name in plugins.names():
                    assert name in plugins
                    plugins.entry(name)
                    try:
                        plugins.load(name)
                    except registry.PluginError:
                        pass
                plugins.records()
                plugins.conflicts()
            for unknown in ("nope", "cuda"):
                try:
                    registry.ACCELERATORS.load(unknown)
                except registry.PluginError:
                    pass
            Fabric()
            with contextlib.redirect_stdout(io.StringIO()):
                main(["plugins", "--json"])
        report(callers)
        """
    )
    assert len(result) == 1, "importlib.metadata.distributions() was called from:\n" + "\n".join(
        result
    )
