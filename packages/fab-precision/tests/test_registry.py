"""Every precision is found by its user-facing name through fab-core's registry."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from fab.core import Fabric, registry
from fab.precision import (
    BitsandbytesPrecision,
    DoublePrecision,
    HalfPrecision,
    MixedPrecision,
    Precision,
    TransformerEnginePrecision,
)

RUNNABLE = {
    "64-true": DoublePrecision,
    "16-mixed": MixedPrecision,
    "bf16-mixed": MixedPrecision,
    "16-true": HalfPrecision,
    "bf16-true": HalfPrecision,
}
NEEDS_LIBRARY = {
    "transformer-engine": TransformerEnginePrecision,
    "transformer-engine-float16": TransformerEnginePrecision,
    "bitsandbytes": BitsandbytesPrecision,
}


def test_every_name_is_registered_by_this_distribution() -> None:
    for name in {**RUNNABLE, **NEEDS_LIBRARY}:
        assert name in registry.PRECISION.names()
        assert registry.PRECISION.entry(name).distribution == "fab-precision"


@pytest.mark.parametrize(("name", "cls"), RUNNABLE.items())
def test_create_by_name_without_arguments_gives_the_class_and_canonical_name(
    name: str, cls: type[Precision]
) -> None:
    precision = registry.PRECISION.create(name)
    assert type(precision) is cls
    assert precision.precision == name


@pytest.mark.parametrize(("name", "cls"), NEEDS_LIBRARY.items())
def test_plugins_needing_a_library_load_without_it_and_say_what_to_install(
    name: str, cls: type[Precision]
) -> None:
    """The class loads without its library (only creating one needs it), and ``fab plugins``
    marks the plugin as needing the library, with the extra that installs it."""
    assert registry.PRECISION.load(name) is cls or callable(registry.PRECISION.load(name))
    (record,) = [r for r in registry.PRECISION.records() if r.name == name]
    assert record.status == "needs", record.detail
    extra = "transformer-engine" if name.startswith("transformer-engine") else "bitsandbytes"
    assert f'pip install "fab-precision[{extra}]"' in record.detail


@pytest.mark.parametrize(
    ("alias", "cls", "canonical"),
    [
        (16, MixedPrecision, "16-mixed"),
        ("16", MixedPrecision, "16-mixed"),
        ("bf16", MixedPrecision, "bf16-mixed"),
        (64, DoublePrecision, "64-true"),
        ("64", DoublePrecision, "64-true"),
        ("bf16-true", HalfPrecision, "bf16-true"),
    ],
)
def test_fabric_aliases_resolve_to_these_classes(
    alias: str | int, cls: type[Precision], canonical: str
) -> None:
    fabric = Fabric(accelerator="cpu", precision=alias)
    assert type(fabric.strategy.precision) is cls
    assert fabric.strategy.precision.precision == canonical


def test_a_precision_instance_is_accepted_as_a_plugin() -> None:
    precision = MixedPrecision("bf16-mixed", device="cpu")
    assert Fabric(accelerator="cpu", plugins=[precision]).strategy.precision is precision


def test_requires_fabric_backward_only_where_the_loss_is_scaled() -> None:
    assert registry.PRECISION.create("16-mixed").requires_fabric_backward
    for name in ("bf16-mixed", "64-true", "16-true", "bf16-true"):
        assert not registry.PRECISION.create(name).requires_fabric_backward, name


def test_every_precision_here_acts_on_forwards() -> None:
    for name in RUNNABLE:
        assert not registry.PRECISION.create(name).forward_is_identity(), name


def test_listing_the_names_imports_no_precision_module() -> None:
    code = (
        "import sys; from fab.core import registry; names = registry.PRECISION.names(); "
        "assert 'bf16-mixed' in names, names; "
        "print([m for m in sys.modules if m.startswith('fab.precision')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", RUNNABLE)
def test_a_precision_survives_pickling_for_spawned_processes(name: str) -> None:
    """Spawn launchers pickle the strategy, and with it the precision."""
    precision = registry.PRECISION.create(name)
    copy = pickle.loads(pickle.dumps(precision))
    assert type(copy) is type(precision)
    assert copy.precision == precision.precision
    assert copy.state_dict() == precision.state_dict()
