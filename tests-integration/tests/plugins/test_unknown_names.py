"""A bad name gets an error that lists the installed names and, for a name that a fab package
provides, says which package to install."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fab.core import Fabric, registry

#: Asks Fabric for a name of each L2 package in a Python where none of them is installed: when
#: they are (the development venv), their distributions are hidden from the registry's scan.
WITHOUT_L2_PACKAGES = """
import importlib.metadata

L2 = {"fab-accelerators", "fab-strategies", "fab-precision", "fab-loggers"}
_distributions = importlib.metadata.distributions

def distributions_without_l2(**kwargs):
    for dist in _distributions(**kwargs):
        if (dist.metadata["Name"] or "").lower() not in L2:
            yield dist

importlib.metadata.distributions = distributions_without_l2

from fab.core import Fabric, registry

errors = {}
for key, kwargs in {
    "accelerator": {"accelerator": "cuda"},
    "gpu": {"accelerator": "gpu"},
    "strategy": {"strategy": "ddp_spawn"},
    "precision": {"precision": "bf16-mixed"},
    "logger": {"loggers": ["tensorboard"]},
    "bitsandbytes": {"precision": "bitsandbytes"},
}.items():
    try:
        Fabric(**kwargs)
    except ValueError as err:
        errors[key] = [type(err).__name__, str(err)]
report(errors)
"""


@pytest.fixture(scope="module")
def errors_without_l2_packages(run_python: Callable[..., Any]) -> dict[str, tuple[str, str]]:
    """Each case's error, as (type name, message), in a Python without fab's L2 packages."""
    raised: dict[str, list[str]] = run_python(WITHOUT_L2_PACKAGES)
    return {case: (kind, message) for case, (kind, message) in raised.items()}


def test_names_of_uninstalled_fab_packages_say_what_to_pip_install(
    errors_without_l2_packages: dict[str, tuple[str, str]],
) -> None:
    cases = ("accelerator", "gpu", "strategy", "precision", "logger")
    kinds = {case: errors_without_l2_packages[case][0] for case in cases}
    assert kinds == dict.fromkeys(cases, "PluginNotFoundError")
    errors = {case: errors_without_l2_packages[case][1] for case in cases}
    assert "unknown accelerator 'cuda'" in errors["accelerator"]
    assert "pip install fab-accelerators" in errors["accelerator"]
    assert "pip install fab-accelerators" in errors["gpu"]
    assert "pip install fab-strategies" in errors["strategy"]
    assert "pip install fab-precision" in errors["precision"]
    assert "pip install fab-loggers" in errors["logger"]
    # The installed names are listed too, the third party's among them.
    assert "Installed: 'acme', 'cpu'." in errors["accelerator"]


def test_a_precision_of_an_uninstalled_fab_package_says_what_to_pip_install(
    errors_without_l2_packages: dict[str, tuple[str, str]],
) -> None:
    assert "pip install fab-precision" in errors_without_l2_packages["bitsandbytes"][1]


@pytest.mark.parametrize(
    ("kwargs", "installed", "suggestion"),
    [
        ({"accelerator": "acmee"}, ["'acme'", "'cpu'"], "Did you mean 'acme'"),
        (
            {"strategy": "acme_singel"},
            ["'acme_single'", "'single_device'"],
            "Did you mean 'acme_single'",
        ),
        ({"loggers": ["acme_memroy"]}, ["'acme_memory'"], "Did you mean 'acme_memory'"),
    ],
)
def test_a_typo_lists_the_installed_names_and_the_closest_one(
    kwargs: dict[str, Any], installed: list[str], suggestion: str
) -> None:
    with pytest.raises(registry.PluginNotFoundError) as caught:
        Fabric(**kwargs)
    message = str(caught.value)
    assert "Installed: " in message
    for name in installed:
        assert name in message
    assert suggestion in message
    assert "pip install" not in message


def test_a_precision_typo_lists_the_accepted_and_installed_precisions() -> None:
    with pytest.raises(ValueError, match="precision='acme-ture' is not supported") as caught:
        Fabric(precision="acme-ture")
    assert "'32-true'" in str(caught.value)
    assert "'acme-true'" in str(caught.value)
