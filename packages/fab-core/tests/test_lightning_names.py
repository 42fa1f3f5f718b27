"""The names Lightning Fabric programs import exist where they look for them (the module paths of
``lightning.fabric`` under ``fab.core``), with Lightning's behaviour."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from fab.core import Fabric, registry
from fab.core.strategies import SingleDeviceStrategy


def test_names_are_at_lightnings_module_paths() -> None:
    from fab.core import disable_possible_user_warnings as top_level
    from fab.core.accelerators import ACCELERATOR_REGISTRY
    from fab.core.plugins.environments import ClusterEnvironment
    from fab.core.strategies import STRATEGY_REGISTRY
    from fab.core.utilities.apply_func import convert_tensors_to_scalars
    from fab.core.utilities.data import has_iterable_dataset, has_len
    from fab.core.utilities.exceptions import MisconfigurationException
    from fab.core.utilities.seed import pl_worker_init_function, seed_worker
    from fab.core.utilities.warnings import PossibleUserWarning, disable_possible_user_warnings

    assert top_level is disable_possible_user_warnings
    assert pl_worker_init_function is seed_worker
    assert issubclass(PossibleUserWarning, UserWarning)
    assert issubclass(MisconfigurationException, Exception)
    assert all(callable(f) for f in (convert_tensors_to_scalars, has_len, has_iterable_dataset))
    assert "single_device" in STRATEGY_REGISTRY
    assert "cpu" in ACCELERATOR_REGISTRY
    assert ClusterEnvironment.__module__ == "fab.core.environments.environment"


# -- warnings -------------------------------------------------------------------------------


def test_disable_possible_user_warnings_silences_only_them() -> None:
    from fab.core.utilities.warnings import PossibleUserWarning, disable_possible_user_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        disable_possible_user_warnings()
        warnings.warn("maybe wrong", PossibleUserWarning, stacklevel=1)
        warnings.warn("surely wrong", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["surely wrong"]


def test_possible_user_warnings_off_in_the_environment_silences_them() -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "import fab.core\n"
        "from fab.core.utilities.warnings import PossibleUserWarning\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.warn('maybe wrong', PossibleUserWarning, stacklevel=1)\n"
        "print(len(caught))\n"
    )
    for value, expected in (("off", "0"), ("", "1")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env={"POSSIBLE_USER_WARNINGS": value, "PATH": ""},
        ).stdout
        assert out.strip() == expected


# -- data and collections -------------------------------------------------------------------


class Stream(IterableDataset[int]):
    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(3))


class SizedStream(Stream):
    def __len__(self) -> int:
        return 3


def test_has_len_and_has_iterable_dataset() -> None:
    from fab.core.utilities.data import has_iterable_dataset, has_len

    assert has_len(DataLoader(list(range(4)), batch_size=2))
    assert not has_len(DataLoader(Stream()))
    assert has_iterable_dataset(DataLoader(Stream()))
    assert not has_iterable_dataset(DataLoader(list(range(4))))
    assert not has_iterable_dataset(object())


def test_has_len_warns_about_an_empty_loader_and_a_sized_iterable_dataset() -> None:
    from fab.core.utilities.data import has_len

    with pytest.warns(UserWarning, match="has length 0"):
        assert has_len(DataLoader([], batch_size=2))
    with pytest.warns(UserWarning, match="IterableDataset of this loader defines __len__"):
        assert has_len(DataLoader(SizedStream()))


def test_convert_tensors_to_scalars() -> None:
    from fab.core.utilities.apply_func import convert_tensors_to_scalars

    converted = convert_tensors_to_scalars(
        {"loss": torch.tensor(0.5), "acc": [torch.tensor([1])], "name": "x", "step": 3}
    )
    assert converted == {"loss": 0.5, "acc": [1], "name": "x", "step": 3}
    assert type(converted["loss"]) is float
    with pytest.raises(ValueError, match=r"has 2 elements \(shape \(2,\)\)"):
        convert_tensors_to_scalars({"loss": torch.tensor([0.5, 0.25])})


# -- STRATEGY_REGISTRY / ACCELERATOR_REGISTRY -------------------------------------------------


def test_creating_the_registry_views_imports_no_plugin() -> None:
    code = (
        "import sys\n"
        "from fab.core.strategies import STRATEGY_REGISTRY\n"
        "from fab.core.accelerators import ACCELERATOR_REGISTRY\n"
        "names = list(STRATEGY_REGISTRY) + ACCELERATOR_REGISTRY.available_accelerators()\n"
        "'ddp' in STRATEGY_REGISTRY\n"
        "plugins = [m for m in sys.modules if m.split('.')[:2] in (['fab', 'strategies'],"
        " ['fab', 'accelerators'], ['fab', 'precision'], ['fab', 'loggers'])]\n"
        "print(plugins)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert out.strip() == "[]"


def test_strategy_registry_is_a_view_of_fabs_registry() -> None:
    from fab.core.strategies import STRATEGY_REGISTRY

    assert STRATEGY_REGISTRY.available_strategies() == registry.STRATEGIES.names()
    entry = STRATEGY_REGISTRY["single_device"]
    assert entry["strategy"] is SingleDeviceStrategy
    assert entry["strategy_name"] == "single_device"
    assert isinstance(STRATEGY_REGISTRY.get("single_device"), SingleDeviceStrategy)
    assert "Registered Strategies: " in str(STRATEGY_REGISTRY)
    with pytest.raises(KeyError, match=r"'nope' not found in registry\. Available names: "):
        STRATEGY_REGISTRY.get("nope")
    sentinel = object()
    assert STRATEGY_REGISTRY.get("nope", sentinel) is sentinel


def test_a_strategy_registered_lightnings_way_reaches_fabric() -> None:
    from fab.core.strategies import STRATEGY_REGISTRY

    class Tagged(SingleDeviceStrategy):
        def __init__(self, tag: str = "", **kwargs: object) -> None:
            super().__init__(**kwargs)  # type: ignore[arg-type]
            self.tag = tag

    STRATEGY_REGISTRY.register("tagged", Tagged, description="a test strategy", tag="lightning")
    try:
        assert "tagged" in registry.STRATEGIES.names()
        assert STRATEGY_REGISTRY["tagged"]["strategy"] is Tagged
        assert STRATEGY_REGISTRY["tagged"]["init_params"] == {"tag": "lightning"}
        assert STRATEGY_REGISTRY["tagged"]["description"] == "a test strategy"
        fabric = Fabric(accelerator="cpu", strategy="tagged", devices=1)
        assert isinstance(fabric.strategy, Tagged)
        assert fabric.strategy.tag == "lightning"
        with pytest.raises(ValueError, match="already registered"):
            STRATEGY_REGISTRY.register("tagged", Tagged)
    finally:
        STRATEGY_REGISTRY.remove("tagged")
    assert "tagged" not in STRATEGY_REGISTRY


def test_the_decorator_form_and_an_installed_plugin_cannot_be_removed() -> None:
    from fab.core.accelerators import ACCELERATOR_REGISTRY, CPUAccelerator
    from fab.core.utilities.exceptions import MisconfigurationException

    @ACCELERATOR_REGISTRY.register("mycpu", description="mine")
    class MyCPU(CPUAccelerator):
        pass

    try:
        assert ACCELERATOR_REGISTRY["mycpu"]["accelerator"] is MyCPU
        with pytest.raises(MisconfigurationException, match="already registered"):
            ACCELERATOR_REGISTRY.register("mycpu", MyCPU)
    finally:
        ACCELERATOR_REGISTRY.remove("mycpu")
    with pytest.raises(ValueError, match=r"FAB_DISABLED_PLUGINS=fab\.accelerators:cpu"):
        ACCELERATOR_REGISTRY.remove("cpu")
    with pytest.raises(KeyError):
        ACCELERATOR_REGISTRY.remove("mycpu")
