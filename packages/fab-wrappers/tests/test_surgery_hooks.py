"""fab.wrappers.surgery on one process: capture and edit by name, every hook point, any output
structure, groups, save_ctx, probes, sinks, and restore()."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

from fab.wrappers import FabricModule
from fab.wrappers.surgery import (
    DataParallelLayout,
    DiskSink,
    HookContext,
    LayoutError,
    LocalLayout,
    Surgery,
    hook_state,
)

from .conftest import RecordingStrategy, Wrapping

WIDTH = 6


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh())

    def forward(self, x: Tensor, *, scale: float | Tensor = 1.0) -> Tensor:
        return x + self.mlp(x) * scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(Block() for _ in range(3))
        self.head = nn.Linear(WIDTH, 2)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def batch(n: int = 4) -> Tensor:
    return torch.randn(n, WIDTH, generator=torch.Generator().manual_seed(1))


def test_capture_by_glob_names_the_users_modules_and_matches_plain_hooks() -> None:
    model = Net()
    expected: dict[str, Tensor] = {}
    handles = [
        model.layers[i].mlp.register_forward_hook(
            lambda m, a, out, i=i: expected.__setitem__(f"layers.{i}.mlp", out.clone())
        )
        for i in range(3)
    ]
    model(batch())
    for handle in handles:
        handle.remove()

    surgery = Surgery(model)
    hooks = surgery.capture("layers.*.mlp")
    model(batch())
    assert [h.key for h in hooks] == ["layers.0.mlp", "layers.1.mlp", "layers.2.mlp"]
    assert set(surgery.captures) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(surgery.captures[name], tensor)


def test_double_star_matches_any_depth_and_unknown_names_suggest_close_ones() -> None:
    surgery = Surgery(Net())
    names = [h.name for h in surgery.capture("**.0")]
    assert names == ["layers.0", "layers.0.mlp.0", "layers.1.mlp.0", "layers.2.mlp.0"]
    with pytest.raises(LookupError, match=r"'layers\.1\.mpl'.*close names.*layers\.1\.mlp"):
        surgery.capture("layers.1.mpl")


def test_hooks_go_on_the_original_module_under_a_strategy_wrapper(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    wrapper = Wrapping(model)
    fabric_model = FabricModule(wrapper, strategy, original_module=model)
    surgery = Surgery(fabric_model)
    assert surgery.module is model
    surgery.capture("layers.0.mlp")
    fabric_model(batch())
    assert wrapper.calls == 1
    assert list(surgery.captures) == ["layers.0.mlp"]
    assert hook_state(wrapper.module)
    assert not wrapper._forward_hooks


def test_captures_are_owned_copies_not_aliases_of_live_tensors() -> None:
    model = Net()
    live: list[Tensor] = []
    model.layers[0].mlp[0].register_forward_hook(lambda m, a, out: live.append(out))
    surgery = Surgery(model)
    surgery.capture("layers.0.mlp.0")
    model(batch())
    captured = surgery.captures["layers.0.mlp.0"]
    expected = live[0].detach().clone()
    assert captured.untyped_storage().data_ptr() != live[0].untyped_storage().data_ptr()
    with torch.no_grad():
        live[0].zero_()  # the live activation changes; the capture does not
    assert torch.equal(captured, expected)
    assert not captured.requires_grad


def test_capture_is_a_copy_even_of_an_activation_edited_in_place_later() -> None:
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(WIDTH, WIDTH)

        def forward(self, x: Tensor) -> Tensor:
            y = self.lin(x)
            y.mul_(0)  # the live tensor changes after the hook ran
            return y

    model = InPlace()
    surgery = Surgery(model)
    surgery.capture("lin")
    x = batch()
    model(x)
    assert torch.allclose(surgery.captures["lin"], model.lin(x))


class Pair(NamedTuple):
    hidden: Tensor
    gate: Tensor


@dataclasses.dataclass
class Output:
    logits: Tensor
    aux: Tensor | None = None


class ModelOutput(OrderedDict[str, Any]):
    """Like transformers' ModelOutput: an OrderedDict subclass."""


class Structured(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.lin = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> Any:
        a, b = self.lin(x), x * 2
        if self.kind == "tuple":
            return (a, b)
        if self.kind == "dict":
            return {"hidden": a, "gate": b}
        if self.kind == "ordered":
            return ModelOutput(hidden=a, gate=b)
        if self.kind == "namedtuple":
            return Pair(a, b)
        return Output(a, b)


class Outer(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.inner = Structured(kind)

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        if isinstance(out, tuple):
            return out[0] + out[1]
        if isinstance(out, dict):
            return out["hidden"] + out["gate"]
        return out.logits + out.aux


@pytest.mark.parametrize(
    ("kind", "second"),
    [("tuple", 1), ("dict", "gate"), ("ordered", "gate"), ("namedtuple", "gate"), ("data", "aux")],
)
def test_any_output_structure_captures_and_edits_the_selected_part(kind: str, second: Any) -> None:
    model = Outer(kind)
    x = batch()
    plain = model(x)
    surgery = Surgery(model)
    surgery.capture("inner")  # the first tensor
    surgery.edit("inner", lambda t, ctx: torch.zeros_like(t), part=second, capture=True)
    edited = model(x)
    hooks = surgery.hooks
    first, second_part = surgery.captures.all("inner")  # in the order the hooks were added
    assert torch.equal(first, model.inner.lin(x).detach())
    assert torch.equal(second_part, x * 2)
    assert surgery.captures["inner"] is second_part  # the latest
    assert torch.equal(edited, model.inner.lin(x))  # the second part was zeroed
    assert not torch.equal(edited, plain)
    assert len(hooks) == 2


def test_the_edited_structure_keeps_its_type() -> None:
    for kind, kind_type in [("namedtuple", Pair), ("data", Output), ("ordered", ModelOutput)]:
        model = Structured(kind)
        surgery = Surgery(model)
        surgery.edit("", lambda t, ctx: t + 1)
        out = model(batch())
        assert type(out) is kind_type
        surgery.restore()


def test_a_part_that_is_not_there_names_the_module_and_what_it_holds() -> None:
    model = Outer("dict")
    surgery = Surgery(model)
    surgery.capture("inner", part="missing")
    with pytest.raises(LookupError, match=r"'inner' \(output\).*no part \['missing'\].*'gate'"):
        model(batch())


def test_pre_forward_captures_and_edits_positional_and_keyword_inputs() -> None:
    model = Block()
    surgery = Surgery(model)
    surgery.capture("", "input", part="x")
    surgery.capture("", "input", part="scale", groups="scale")
    x = batch()
    model(x, scale=torch.tensor(3.0))
    assert torch.equal(surgery.captures.all(":input")[0], x)
    assert surgery.captures.all(":input")[1].item() == 3.0
    surgery.captures.clear()
    model(x=x, scale=torch.tensor(2.0))  # x by keyword this time
    assert torch.equal(surgery.captures.all(":input")[0], x)
    surgery.restore()

    surgery = Surgery(model)
    surgery.edit("", lambda t, ctx: torch.zeros_like(t), "input", part="scale")
    assert torch.equal(model(x, scale=torch.tensor(5.0)), x)


def test_backward_points_capture_and_edit_gradients() -> None:
    model = Net()
    x = batch().requires_grad_()
    surgery = Surgery(model)
    surgery.capture("layers.1", "grad_output")
    surgery.capture("layers.1", "grad_input")
    surgery.capture("head.weight", "param_grad")
    model(x).sum().backward()
    grad_out = surgery.captures["layers.1:grad_output"]
    grad_in = surgery.captures["layers.1:grad_input"]
    assert torch.equal(surgery.captures["head.weight:param_grad"], model.head.weight.grad)
    assert grad_out.shape == grad_in.shape == x.shape
    surgery.restore()

    # the same gradients by hand
    model.zero_grad()
    h: dict[str, Tensor] = {}
    x2 = x.detach().requires_grad_()
    out = x2
    for i, layer in enumerate(model.layers):
        if i == 1:
            out.retain_grad()
            h["in"] = out
        out = layer(out)
        if i == 1:
            out.retain_grad()
            h["out"] = out
    model.head(out).sum().backward()
    assert torch.equal(grad_out, h["out"].grad)
    assert torch.equal(grad_in, h["in"].grad)

    # an edit of the input gradient reaches the model's input
    surgery = Surgery(model)
    surgery.edit("layers.0", lambda g, ctx: torch.zeros_like(g), "grad_input")
    x3 = x.detach().requires_grad_()
    model(x3).sum().backward()
    assert x3.grad is not None
    assert torch.count_nonzero(x3.grad) == 0


def test_no_gradient_into_an_input_that_needs_none_captures_nothing_and_raises_nothing() -> None:
    model = Net()
    surgery = Surgery(model)
    surgery.capture("layers.0", "grad_input")
    surgery.capture("layers.1", "grad_input")
    model(batch()).sum().backward()  # the batch does not require grad
    assert list(surgery.captures) == ["layers.1:grad_input"]


def test_groups_switch_on_and_off_freely_per_forward() -> None:
    model = Net()
    surgery = Surgery(model)
    surgery.capture("layers.0", groups="early")
    surgery.capture("layers.2", groups="late")
    x = batch()

    def ran(**options: Any) -> set[str]:
        surgery.captures.clear()
        surgery.forward(x, **options)
        return set(surgery.captures)

    assert ran(groups="early") == {"layers.0"}
    assert ran(groups="late") == {"layers.2"}
    assert ran(groups="early") == {"layers.0"}  # back again
    assert ran(groups="early", complement=True) == {"layers.2"}
    assert ran() == {"layers.0", "layers.2"}
    surgery.disable("late")
    assert ran() == {"layers.0"}
    surgery.enable("late")
    assert ran() == {"layers.0", "layers.2"}
    surgery.group("late", "layers.0")
    assert ran(groups="late") == {"layers.0", "layers.2"}
    surgery.ungroup("late", "layers.0")
    assert ran(groups="late") == {"layers.2"}
    assert {h.name for h in surgery.hooks_in("early")} == {"layers.0"}
    with pytest.raises(ValueError, match="every hook is in the group 'all'"):
        surgery.ungroup("all", "layers.0")


def test_save_ctx_is_shared_between_hooks_and_across_forwards() -> None:
    model = Net()
    surgery = Surgery(model)

    def remember(t: Tensor, ctx: HookContext) -> None:
        ctx.save_ctx.seen = getattr(ctx.save_ctx, "seen", 0) + 1
        ctx.save_ctx.first = t.detach().clone()

    def patch(t: Tensor, ctx: HookContext) -> Tensor:
        return ctx.save_ctx.first  # type: ignore[no-any-return]

    surgery.edit("layers.0.mlp", remember)
    surgery.edit("layers.1.mlp", patch)
    model(batch())
    model(batch())
    assert surgery.save_ctx.seen == 2


def test_probes_are_real_submodules_trained_through_an_edit() -> None:
    model = Net()
    model.requires_grad_(False)
    surgery = Surgery(model)
    probe = surgery.add_probe("probe", nn.Linear(WIDTH, WIDTH))
    surgery.edit("layers.1", lambda t, ctx: ctx.probes["probe"](t))
    assert {id(p) for p in probe.parameters()} <= {id(p) for p in model.parameters()}
    assert "surgery_probes.probe.weight" in model.state_dict()
    model(batch()).sum().backward()
    assert probe.weight.grad is not None
    assert model.head.weight.grad is None


def test_a_probe_added_after_a_strategy_wrapped_the_model_is_refused(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    surgery = Surgery(FabricModule(Wrapping(model), strategy, original_module=model))
    with pytest.raises(RuntimeError, match="before the model is set up"):
        surgery.add_probe("probe", nn.Linear(WIDTH, WIDTH))


def test_a_probe_on_a_sequential_is_refused_since_it_would_become_a_layer() -> None:
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH))
    with pytest.raises(TypeError, match="Sequential: its forward runs every child"):
        Surgery(model).add_probe("probe", nn.Linear(WIDTH, WIDTH))
    assert len(model) == 1


def test_read_parameter_gives_the_whole_tensor_as_a_copy() -> None:
    model = Net()
    surgery = Surgery(model)
    weight = surgery.read_parameter("layers.2.mlp.0.weight")
    assert torch.equal(weight, model.layers[2].mlp[0].weight)
    weight.zero_()
    assert torch.count_nonzero(model.layers[2].mlp[0].weight) > 0
    with pytest.raises(LookupError, match="no parameter"):
        surgery.read_parameter("layers.2.weight")


def test_restore_leaves_the_model_exactly_as_it_was() -> None:
    model = Net()
    x = batch()

    def run() -> tuple[Tensor, list[Tensor]]:
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    before_out, before_grads = run()
    before_keys = list(model.state_dict())
    flags = {n: m._is_full_backward_hook for n, m in model.named_modules()}

    surgery = Surgery(model)
    surgery.add_probe("probe", nn.Linear(WIDTH, WIDTH))
    surgery.edit("layers.*", lambda t, ctx: ctx.probes["probe"](t), groups="a")
    surgery.capture("layers.0", "grad_input", groups="b")
    surgery.capture("layers.0", "grad_output")
    surgery.capture("head.bias", "param_grad")
    surgery.capture("layers.1", "input")
    surgery.disable("b")
    surgery.forward(x, groups="a")
    run()
    assert surgery.restore() is model

    assert hook_state(model) == {}
    assert list(model.state_dict()) == before_keys
    assert {n: m._is_full_backward_hook for n, m in model.named_modules()} == flags
    after_out, after_grads = run()
    assert torch.equal(after_out, before_out)
    assert all(torch.equal(a, b) for a, b in zip(after_grads, before_grads, strict=True))
    with pytest.raises(RuntimeError, match="restored"):
        surgery.capture("head")


def test_a_sink_receives_captures_instead_of_memory(tmp_path: Path) -> None:
    model = Net()
    received: list[tuple[str, tuple[int, ...]]] = []
    surgery = Surgery(model)
    surgery.capture("layers.0", sink=lambda key, t: received.append((key, tuple(t.shape))))
    disk = DiskSink(tmp_path / "acts")
    surgery.capture("layers.*.mlp", sink=disk)
    model(batch(3))
    model(batch(5))
    assert received == [("layers.0", (3, WIDTH)), ("layers.0", (5, WIDTH))]
    assert len(surgery.captures) == 0
    written = disk.load("layers.1.mlp")
    assert [t.shape[0] for t in written] == [3, 5]


def test_edit_of_the_wrong_shape_is_refused_with_the_shapes() -> None:
    model = Net()
    surgery = Surgery(model)
    surgery.edit("layers.0", lambda t, ctx: t[:, :2])
    with pytest.raises(ValueError, match=r"'layers\.0'.*\(4, 2\).*\(4, 6\)"):
        model(batch())


def test_one_process_needs_no_process_group_and_an_explicit_layout_is_used() -> None:
    import torch.distributed as dist

    assert not dist.is_initialized()
    assert isinstance(Surgery(Net()).layout, LocalLayout)
    layout = LocalLayout()
    assert Surgery(Net(), layout=layout).layout is layout


def test_data_parallel_layout_without_a_process_group_names_the_fix() -> None:
    with pytest.raises(LayoutError, match="on one process use LocalLayout"):
        DataParallelLayout()


class AnsweringStrategy(RecordingStrategy):
    """A strategy that says how activations are split (as fab's sharded strategies do)."""

    def __init__(self, answer: object) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[nn.Module] = []

    def surgery_layout(self, module: nn.Module) -> object:
        self.asked.append(module)
        return self.answer


def test_a_strategy_answers_the_layout_protocol_for_its_model() -> None:
    model = Net()
    layout = LocalLayout()
    strategy = AnsweringStrategy(layout)
    surgery = Surgery(FabricModule(Wrapping(model), strategy, original_module=model))
    assert surgery.layout is layout
    assert strategy.asked == [model]  # asked about the user's module, not the wrapper


def test_a_strategy_answer_that_is_not_a_layout_is_refused() -> None:
    model = Net()
    strategy = AnsweringStrategy("not a layout")
    surgery = Surgery(FabricModule(Wrapping(model), strategy, original_module=model))
    with pytest.raises(TypeError, match=r"AnsweringStrategy\.surgery_layout returned 'not a"):
        _ = surgery.layout


def test_bind_moves_gradient_hooks_to_parameters_the_set_up_replaced(
    strategy: RecordingStrategy,
) -> None:
    model = Net()
    surgery = Surgery(model)
    surgery.capture("head.weight", "param_grad")
    model.head.weight = nn.Parameter(model.head.weight.detach().clone())  # as a strategy may
    fabric_model = FabricModule(model, strategy)
    surgery.bind(fabric_model)
    fabric_model(batch()).sum().backward()
    assert torch.equal(surgery.captures["head.weight:param_grad"], model.head.weight.grad)
    assert torch.equal(surgery.read_gradient("head.weight"), model.head.weight.grad)
    with pytest.raises(ValueError, match="another module"):
        surgery.bind(FabricModule(Net(), strategy))


def test_read_gradient_before_backward_says_why_there_is_none() -> None:
    surgery = Surgery(Net())
    with pytest.raises(LookupError, match=r"'head\.bias' has no gradient"):
        surgery.read_gradient("head.bias")
