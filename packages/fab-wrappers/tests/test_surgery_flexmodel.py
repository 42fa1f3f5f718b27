"""The FlexModel-compatible facade: the API page's program runs with only the import changed, and
one test per FlexModel 0.1.0 fault (named in issue 13) shows fab does not have it."""

from __future__ import annotations

from argparse import Namespace
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from fab.wrappers.surgery import FlexModel, HookFunction, LayoutError, hook_state

WIDTH = 8


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.mlp(x)) + x


class MyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Layer() for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def inputs(n: int = 3) -> Tensor:
    return torch.randn(n, WIDTH, generator=torch.Generator().manual_seed(2))


def test_the_api_page_example_runs_with_only_the_import_changed() -> None:
    # From FlexModel's API page (one process here; expected_shape is accepted and not needed).
    model = MyModel()
    output_dict: dict[str, list[Tensor]] = {}
    flex_model = FlexModel(
        model, output_dict, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1
    )
    my_hook_function = HookFunction(
        "layers.3.mlp", expected_shape=(3, WIDTH), editing_function=None
    )
    flex_model.register_forward_hook(my_hook_function)
    outputs = flex_model(inputs())
    assert torch.equal(outputs, model(inputs()))
    assert torch.equal(output_dict["layers.3.mlp"][0], model.layers[3].mlp(_input_of(model, 3)))


def _input_of(model: MyModel, index: int) -> Tensor:
    x = inputs()
    for layer in model.layers[:index]:
        x = layer(x)
    return x.detach()


def test_editing_function_gets_module_tensor_save_ctx_and_trainable_modules() -> None:
    model = MyModel()
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(model, out)
    flex.register_trainable_module("probe", nn.Linear(WIDTH, WIDTH))
    seen: list[Any] = []

    def editing_function(
        current_module: nn.Module | None, x: Tensor, save_ctx: Namespace, modules: nn.ModuleDict
    ) -> Tensor:
        seen.append((current_module, save_ctx, set(modules)))
        save_ctx.last = x.detach()
        return modules["probe"](x)

    flex.register_forward_hook(HookFunction("layers.0", editing_function=editing_function))
    flex(inputs())
    assert seen == [(model.layers[0], flex.save_ctx, {"probe"})]
    assert torch.equal(flex.save_ctx.last, out["layers.0"][0])


# -- one test per FlexModel 0.1.0 fault ------------------------------------------------------------


def test_fault_groups_switch_both_ways() -> None:
    """FlexModel 0.1.0 enables a group for one forward but never switches it off again."""
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(MyModel(), out)
    flex.create_hook_group("early", "layers.0")
    flex.create_hook_group("late", "layers.3")

    def fired(**options: Any) -> set[str]:
        out.clear()
        flex(inputs(), **options)
        return set(out)

    assert fired(groups="early") == {"layers.0", "layers.0.mlp"}
    assert fired(groups="late") == {"layers.3", "layers.3.mlp"}
    assert fired(groups="early") == {"layers.0", "layers.0.mlp"}
    assert fired(groups="late", complement=True) == {"layers.0", "layers.0.mlp"}
    assert fired() == {"layers.0", "layers.0.mlp", "layers.3", "layers.3.mlp"}


def test_fault_create_hook_group_creates_hooks() -> None:
    """FlexModel 0.1.0's create_hook_group matches against a tuple of names and creates none."""
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(MyModel(), out)
    made = flex.create_hook_group("mlps", "mlp")
    assert [f.module_name for f in made] == [f"layers.{i}.mlp" for i in range(4)]
    assert flex.get_group_hook_functions("mlps") == made
    assert flex.get_hook_function_groups(made[0]) == {"all", "mlps"}
    flex(inputs(), groups="mlps")
    assert sorted(out) == [f"layers.{i}.mlp" for i in range(4)]
    flex.update_hook_groups(made[0], "first")
    flex.remove_hook_groups("layers.1", "mlps")
    assert flex.get_group_hook_functions("first") == [made[0]]
    assert made[1] not in flex.get_group_hook_functions("mlps")


def test_fault_captures_do_not_alias_live_tensors() -> None:
    """FlexModel 0.1.0 stores ``activation.detach().cpu()``: on CPU that is the live tensor."""
    model = MyModel()
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(model, out)
    live: list[Tensor] = []
    model.layers[1].mlp.register_forward_hook(lambda m, a, o: live.append(o))
    flex.register_forward_hook(HookFunction("layers.1.mlp"))
    flex(inputs())
    kept = out["layers.1.mlp"][0].clone()
    with torch.no_grad():
        live[0].add_(100)
    assert torch.equal(out["layers.1.mlp"][0], kept)


def test_fault_dict_and_namedtuple_outputs_and_keyword_only_inputs_are_captured() -> None:
    """FlexModel 0.1.0 captures nothing for dict or namedtuple outputs or keyword-only inputs."""
    Out = namedtuple("Out", ["hidden", "extra"])

    class Dicty(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(WIDTH, WIDTH)

        def forward(self, *, x: Tensor) -> dict[str, Tensor]:
            return {"hidden": self.lin(x), "extra": x}

    class Named(nn.Module):
        def forward(self, x: Tensor) -> Any:
            return Out(x + 1, x)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dicty = Dicty()
            self.named = Named()

        def forward(self, x: Tensor) -> Tensor:
            hidden = self.dicty(x=x)["hidden"]
            result: Tensor = self.named(hidden).hidden
            return result

    model = Model()
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(model, out)
    flex.register_forward_hook(HookFunction("dicty"))
    flex.register_forward_hook(HookFunction("named", unpack_idx=1))
    flex.register_forward_pre_hook(HookFunction("dicty"))  # x is keyword-only
    x = inputs()
    result = flex(x)
    hidden = model.dicty.lin(x)
    pre_in, forward_out = out["dicty"]  # the pre-forward hook ran first
    assert torch.equal(pre_in, x)
    assert torch.equal(forward_out, hidden.detach())
    assert torch.equal(out["named"][0], hidden.detach())
    assert torch.equal(result, hidden + 1)


def test_fault_trainable_modules_appear_in_the_wrapped_models_parameters() -> None:
    """FlexModel 0.1.0 keeps probes beside the model, so an optimizer or a strategy given the
    model's parameters never sees them."""
    model = MyModel()
    flex = FlexModel(model, {})
    probe = nn.Linear(WIDTH, 1)
    flex.register_trainable_module("probe", probe)
    assert {id(p) for p in probe.parameters()} <= {id(p) for p in model.parameters()}
    assert "surgery_probes.probe.weight" in model.state_dict()
    assert flex.trainable_modules["probe"] is probe
    flex.wrapped_module_requires_grad(False)
    assert probe.weight.requires_grad
    assert not model.layers[0].mlp.weight.requires_grad


def test_fault_restore_after_a_group_forward_works_and_leaves_the_model_untouched() -> None:
    """FlexModel 0.1.0's restore() crashes after a forward with groups (hook handles are None)."""
    model = MyModel()
    x = inputs()
    before = model(x).detach()
    flex = FlexModel(model, {})
    flex.create_hook_group("a", "layers.1", editing_function=lambda m, t, c, p: t * 0)
    flex.create_hook_group("b", "layers.2")
    flex.register_trainable_module("probe", nn.Linear(WIDTH, WIDTH))
    flex(x, groups="b")
    assert flex.restore() is model
    assert hook_state(model) == {}
    assert "surgery_probes" not in dict(model.named_children())
    assert torch.equal(model(x), before)


def test_fault_no_process_group_is_needed_on_one_process() -> None:
    """FlexModel 0.1.0 initializes its own distributed state and needs a process group (NCCL)."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(MyModel(), out)
    flex.register_full_backward_hook(HookFunction("layers.2"))
    flex.register_hook(HookFunction("layers.2.mlp.weight"))
    flex(inputs()).sum().backward()
    assert set(out) == {"layers.2", "layers.2.mlp.weight"}
    assert not dist.is_initialized()


def test_fault_no_expected_shape_is_needed() -> None:
    """FlexModel 0.1.0 needs expected_shape to reassemble a tensor; here it is optional and any
    batch size is captured whole."""
    out: dict[str, list[Tensor]] = {}
    flex = FlexModel(MyModel(), out)
    flex.register_forward_hook(HookFunction("layers.0"))
    flex(inputs(3))
    flex(inputs(5))
    assert [t.shape[0] for t in out["layers.0"]] == [3, 5]


def test_pipeline_parallel_is_refused_clearly() -> None:
    with pytest.raises(NotImplementedError, match="no pipeline-parallel strategy"):
        FlexModel(MyModel(), {}, pipeline_parallel_size=2)


def test_parallel_sizes_without_a_process_group_are_refused() -> None:
    with pytest.raises(LayoutError, match="data_parallel_size=2 need a running"):
        FlexModel(MyModel(), {}, data_parallel_size=2)


def test_get_module_parameter_and_names() -> None:
    model = MyModel()
    flex = FlexModel(model, {})
    weight = flex.get_module_parameter("layers.1.mlp.weight", (WIDTH, WIDTH))
    assert torch.equal(weight, model.layers[1].mlp.weight)
    flex.register_trainable_module("probe", nn.Linear(WIDTH, 1))
    assert "layers.1.mlp" in flex.wrapped_module_names
    assert "surgery_probes" not in flex.wrapped_module_names
    assert flex.trainable_modules_names == ["probe"]
    assert flex.all_modules_names[-1] == "probe"
