"""``Fabric(precision=...)`` refuses what Lightning Fabric refuses, with a ValueError that
teaches."""

from __future__ import annotations

import pytest

from fab.core import Fabric, registry


@pytest.mark.parametrize("value", [17, 8, 0, -32, 16.0, True, b"32", ("32-true",)])
def test_a_value_that_is_no_precision_raises_value_error_naming_it_and_the_accepted(
    value: object,
) -> None:
    with pytest.raises(ValueError, match="is not supported") as caught:
        Fabric(accelerator="cpu", precision=value)  # type: ignore[arg-type]
    message = str(caught.value)
    assert f"precision={value!r} is not supported" in message
    for accepted in ("'64-true'", "'32-true'", "'16-mixed'", "'bf16-mixed'", "'bf16-true'"):
        assert accepted in message
    assert "aliases 64, '64', 32, '32', 16, '16', 'bf16'" in message


def test_an_unknown_precision_name_raises_value_error_listing_the_accepted() -> None:
    with pytest.raises(ValueError, match=r"precision='17-true' is not supported; accepted: '64"):
        Fabric(accelerator="cpu", precision="17-true")


def test_a_bad_precision_name_in_plugins_raises_value_error() -> None:
    with pytest.raises(ValueError, match="precision='17' is not supported; accepted: '64-true'"):
        Fabric(accelerator="cpu", plugins=["17"])


def test_a_name_from_a_missing_package_stays_a_plugin_not_found_error_and_a_value_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.KNOWN_PROVIDERS["fab.precision"], "fp4-future", "fab-precision")
    # Missing: "pip install fab-precision"; installed without the name: "pip install -U ...".
    with pytest.raises(registry.PluginNotFoundError, match=r"pip install (-U )?fab-precision") as e:
        Fabric(accelerator="cpu", precision="fp4-future")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("value", [None, 32, "32", "32-true"])
def test_the_32_bit_values_are_accepted(value: object) -> None:
    fabric = Fabric(accelerator="cpu", precision=value)  # type: ignore[arg-type]
    assert fabric.strategy.precision.precision == "32-true"
