"""transformer-engine and bitsandbytes: a clear error without their libraries; with them, the glue
(which layers are replaced, with what, in which dtype) checked against stand-ins that have the
libraries' documented signatures. The libraries themselves (and their GPU kernels) are not run
here."""

from __future__ import annotations

import copy
import enum
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from fab.core import Fabric, registry
from fab.precision import BitsandbytesPrecision, TransformerEnginePrecision


def _installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


# -- without the libraries --------------------------------------------------------------------


@pytest.mark.skipif(_installed("transformer_engine"), reason="transformer_engine is installed")
@pytest.mark.parametrize("name", ["transformer-engine", "transformer-engine-float16"])
def test_transformer_engine_without_the_library_says_what_to_install(name: str) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"pip install \"transformer_engine\[pytorch\]\""):
        registry.PRECISION.create(name)
    with pytest.raises(ModuleNotFoundError, match=f"precision='{name}'"):
        Fabric(accelerator="cpu", precision=name)


@pytest.mark.skipif(_installed("bitsandbytes"), reason="bitsandbytes is installed")
def test_bitsandbytes_without_the_library_says_what_to_install() -> None:
    with pytest.raises(ModuleNotFoundError, match="pip install bitsandbytes"):
        registry.PRECISION.create("bitsandbytes")
    with pytest.raises(ModuleNotFoundError, match="needs 'bitsandbytes'"):
        BitsandbytesPrecision("int8")


def test_a_bad_bitsandbytes_mode_is_refused_before_the_library_is_needed() -> None:
    with pytest.raises(ValueError, match="nf4, nf4-dq, fp4, fp4-dq, int8, int8-training"):
        BitsandbytesPrecision("int4")  # type: ignore[arg-type]


def test_a_library_that_is_there_but_fails_to_import_keeps_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a missing library becomes 'install it': one that is installed but needs something
    missing, or fails otherwise, reports its own error."""
    package = tmp_path / "bitsandbytes"
    package.mkdir()
    (package / "__init__.py").write_text("import fab_missing_dependency_of_bitsandbytes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    with pytest.raises(ModuleNotFoundError) as caught:
        BitsandbytesPrecision()
    assert caught.value.name == "fab_missing_dependency_of_bitsandbytes"
    assert "pip install" not in str(caught.value)
    (package / "__init__.py").write_text("raise RuntimeError('no CUDA library found')\n")
    monkeypatch.delitem(sys.modules, "bitsandbytes", raising=False)
    with pytest.raises(RuntimeError, match="no CUDA library found"):
        BitsandbytesPrecision()


# -- Transformer Engine stand-in --------------------------------------------------------------


class _Format(enum.Enum):
    E4M3 = "E4M3"
    HYBRID = "HYBRID"


class _DelayedScaling:
    def __init__(self, **options: Any) -> None:
        self.options = options


class _TELinear(nn.Linear):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        params_dtype: torch.dtype | None = None,
        device: str = "cpu",  # the real default is "cuda"
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, dtype=params_dtype, device=device)


class _TELayerNorm(nn.LayerNorm):
    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        params_dtype: torch.dtype | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(hidden_size, eps=eps, dtype=params_dtype, device=device)


_TELinear.__module__ = _TELayerNorm.__module__ = "transformer_engine.pytorch.module"


@pytest.fixture
def te(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    entered: list[dict[str, Any]] = []

    @contextmanager
    def fp8_autocast(enabled: bool = True, fp8_recipe: Any = None) -> Iterator[None]:
        entered.append(
            {"enabled": enabled, "recipe": fp8_recipe, "default": torch.get_default_dtype()}
        )
        yield

    pytorch = types.ModuleType("transformer_engine.pytorch")
    pytorch.Linear = _TELinear  # type: ignore[attr-defined]
    pytorch.LayerNorm = _TELayerNorm  # type: ignore[attr-defined]
    pytorch.fp8_autocast = fp8_autocast  # type: ignore[attr-defined]
    recipe = types.ModuleType("transformer_engine.common.recipe")
    recipe.DelayedScaling = _DelayedScaling  # type: ignore[attr-defined]
    recipe.Format = _Format  # type: ignore[attr-defined]
    for name, module in {
        "transformer_engine": types.ModuleType("transformer_engine"),
        "transformer_engine.pytorch": pytorch,
        "transformer_engine.common": types.ModuleType("transformer_engine.common"),
        "transformer_engine.common.recipe": recipe,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(entered=entered)


def test_transformer_engine_replaces_linear_and_layer_norm_layers(te: Any) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(32, 16), nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 10)), nn.Linear(10, 3)
    )
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    precision = TransformerEnginePrecision()
    with pytest.warns(UserWarning, match="FP8 needs both dimensions divisible by 16") as caught:
        converted = precision.convert_module(model)
    kept = [str(w.message) for w in caught]
    assert len(kept) == 2
    assert "Linear layer '1.1' (16 -> 10) is kept" in kept[0]
    assert "Linear layer '2' (10 -> 3) is kept" in kept[1]
    assert type(converted[0]) is _TELinear
    assert type(converted[1][0]) is _TELayerNorm
    assert type(converted[1][1]) is nn.Linear  # 10 outputs: not a multiple of 16
    assert type(converted[2]) is nn.Linear
    assert {p.dtype for p in converted.parameters()} == {torch.bfloat16}
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, weights[key].to(torch.bfloat16))


def test_transformer_engine_leaves_models_with_its_layers_and_subclasses_alone(te: Any) -> None:
    class MyLinear(nn.Linear):
        pass

    own = nn.Sequential(_TELinear(16, 16), nn.Linear(16, 16))
    TransformerEnginePrecision().convert_module(own)
    assert type(own[1]) is nn.Linear
    custom = nn.Sequential(MyLinear(16, 16))
    TransformerEnginePrecision().convert_module(custom)
    assert type(custom[0]) is MyLinear
    plain = nn.Sequential(nn.Linear(16, 16))
    TransformerEnginePrecision(replace_layers=False).convert_module(plain)
    assert type(plain[0]) is nn.Linear


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")
def test_transformer_engine_forward_runs_under_fp8_autocast_with_the_recipe(te: Any) -> None:
    precision = TransformerEnginePrecision(
        weights_dtype=torch.float16, recipe={"fp8_format": "HYBRID", "amax_history_len": 16}
    )
    assert precision.precision == "transformer-engine-float16"
    assert precision.recipe.options == {"fp8_format": _Format.HYBRID, "amax_history_len": 16}
    with precision.forward_context():
        assert torch.get_default_dtype() == torch.float16
    assert te.entered == [{"enabled": True, "recipe": precision.recipe, "default": torch.float16}]
    assert precision.convert_input(torch.ones(1)).dtype == torch.float16
    assert precision.convert_output(torch.ones(1, dtype=torch.float16)).dtype == torch.float32
    with precision.module_init_context():
        assert nn.Linear(1, 1).weight.dtype == torch.float16


def test_transformer_engine_defaults(te: Any) -> None:
    precision = registry.PRECISION.create("transformer-engine")
    assert precision.precision == "transformer-engine"
    assert precision.weights_dtype == precision.fallback_compute_dtype == torch.bfloat16
    assert isinstance(precision.recipe, _DelayedScaling)


# -- bitsandbytes stand-in --------------------------------------------------------------------


class _Linear4bit(nn.Linear):
    def __init__(
        self,
        input_features: int,
        output_features: int,
        bias: bool = True,
        compute_dtype: torch.dtype | None = None,
        compress_statistics: bool = True,
        quant_type: str = "fp4",
        quant_storage: torch.dtype = torch.uint8,
        device: Any = None,
    ) -> None:
        super().__init__(input_features, output_features, bias=bias, device=device)
        self.options = {
            "compute_dtype": compute_dtype,
            "compress_statistics": compress_statistics,
            "quant_type": quant_type,
        }


class _Linear8bitLt(nn.Linear):
    def __init__(
        self,
        input_features: int,
        output_features: int,
        bias: bool = True,
        has_fp16_weights: bool = True,
        threshold: float = 0.0,
        index: Any = None,
        device: Any = None,
    ) -> None:
        super().__init__(input_features, output_features, bias=bias, device=device)
        self.options = {"has_fp16_weights": has_fp16_weights, "threshold": threshold}


@pytest.fixture
def bnb(monkeypatch: pytest.MonkeyPatch) -> None:
    library = types.ModuleType("bitsandbytes")
    layers = types.ModuleType("bitsandbytes.nn")
    layers.Linear4bit = _Linear4bit  # type: ignore[attr-defined]
    layers.Linear8bitLt = _Linear8bitLt  # type: ignore[attr-defined]
    library.nn = layers  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bitsandbytes", library)
    monkeypatch.setitem(sys.modules, "bitsandbytes.nn", layers)


def transformer() -> nn.Module:
    torch.manual_seed(0)

    def block() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))

    return nn.ModuleDict({"blocks": nn.Sequential(block(), block()), "head": nn.Linear(8, 2)})


@pytest.mark.parametrize(
    ("mode", "cls", "options"),
    [
        ("nf4", _Linear4bit, {"quant_type": "nf4", "compress_statistics": False}),
        ("nf4-dq", _Linear4bit, {"quant_type": "nf4", "compress_statistics": True}),
        ("fp4", _Linear4bit, {"quant_type": "fp4", "compress_statistics": False}),
        ("fp4-dq", _Linear4bit, {"quant_type": "fp4", "compress_statistics": True}),
        ("int8", _Linear8bitLt, {"has_fp16_weights": False, "threshold": 6.0}),
        ("int8-training", _Linear8bitLt, {"has_fp16_weights": True, "threshold": 6.0}),
    ],
)
def test_bitsandbytes_replaces_linear_layers_by_mode(
    bnb: None, mode: Any, cls: type, options: dict[str, Any]
) -> None:
    model = transformer()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    precision = BitsandbytesPrecision(mode, dtype=torch.bfloat16)
    converted = precision.convert_module(model)
    linears = [m for m in converted.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 5
    for layer in linears:
        assert type(layer) is cls
        assert options.items() <= layer.options.items()
        if cls is _Linear4bit:
            assert layer.options["compute_dtype"] == torch.bfloat16
    assert {p.dtype for p in converted.parameters()} == {torch.bfloat16}
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, weights[key].to(torch.bfloat16))


def test_bitsandbytes_ignores_modules_by_qualified_name_prefix(bnb: None) -> None:
    precision = BitsandbytesPrecision("nf4", ignore_modules={"head", "blocks.1"})
    converted = precision.convert_module(transformer())
    assert type(converted["head"]) is nn.Linear
    assert type(converted["blocks"][1][0]) is nn.Linear
    assert type(converted["blocks"][0][0]) is _Linear4bit


def test_bitsandbytes_leaves_a_quantized_model_alone_and_sets_dtypes(bnb: None) -> None:
    quantized = nn.Sequential(_Linear4bit(4, 4), nn.Linear(4, 4))
    precision = BitsandbytesPrecision("nf4", dtype=torch.float16)
    assert precision.convert_module(quantized)[1].weight.dtype == torch.float32
    with precision.forward_context():
        assert torch.get_default_dtype() == torch.float16
    with precision.tensor_init_context():
        assert torch.zeros(1).dtype == torch.float16
    assert precision.convert_input([torch.ones(1)])[0].dtype == torch.float16
    assert precision.convert_output(torch.ones(1, dtype=torch.float16)).dtype == torch.float32


def test_bitsandbytes_defaults(bnb: None) -> None:
    precision = registry.PRECISION.create("bitsandbytes")
    assert precision.precision == "bitsandbytes"
    assert precision.mode == "nf4"
    expected = torch.float16 if not torch.cuda.is_available() else precision.dtype
    assert precision.dtype == expected
    assert BitsandbytesPrecision("int8").dtype == torch.float16


def test_the_optional_precisions_hold_no_module_objects(te: Any, bnb: None) -> None:
    """Spawn launchers pickle the precision; a module object on it would make that fail."""
    for precision in (TransformerEnginePrecision(), BitsandbytesPrecision()):
        assert not any(isinstance(v, types.ModuleType) for v in vars(precision).values())
        assert copy.deepcopy(precision).precision == precision.precision
