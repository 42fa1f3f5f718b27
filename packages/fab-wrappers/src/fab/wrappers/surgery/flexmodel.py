"""FlexModel 0.1.0's API on top of :class:`~fab.wrappers.surgery.Surgery`.

Programs written for ``flex_model`` run with ``from fab.wrappers.surgery import FlexModel,
HookFunction`` instead. What differs is what FlexModel 0.1.0 gets wrong: groups switch both ways,
``create_hook_group`` creates hooks, captures are owned copies, any output structure and keyword
inputs are captured, probes are submodules of the wrapped model, ``restore()`` works after a group
forward, no process group is needed on one process, and no ``expected_shape`` is needed (it is
accepted and ignored).
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor
from torch.nn import Module, ModuleDict

from fab.wrappers.surgery.hooks import Hook, HookContext, Point
from fab.wrappers.surgery.layout import (
    DataParallelLayout,
    LayoutError,
    LocalLayout,
    SurgeryLayout,
    resolve_layout,
)
from fab.wrappers.surgery.names import PROBES_ATTRIBUTE, original_module
from fab.wrappers.surgery.structure import Leaf
from fab.wrappers.surgery.surgery import ALL, Surgery

#: FlexModel's hook types and where they sit.
HOOK_TYPES: dict[str, Point] = {
    "forward": "output",
    "forward_pre": "input",
    "full_backward": "grad_input",
    "backward_pre": "grad_output",
    "tensor": "param_grad",
}

#: ``editing_function(current_module, inputs, save_ctx, modules)``.
EditingFunction = Callable[[Module | None, Tensor, Namespace, ModuleDict], Tensor | None]


class HookFunction:
    """Captures (into the FlexModel's ``output_ptr``) and optionally edits one module's tensor.

    ``expected_shape`` is accepted for compatibility and not needed: the layout knows how the
    tensor is split. ``unpack_idx`` picks the n-th tensor of a structured output (or of the
    positional and keyword inputs).
    """

    def __init__(
        self,
        module_name: str,
        expected_shape: Sequence[int | None] | None = None,
        editing_function: EditingFunction | None = None,
        unpack_idx: int = 0,
        hook_type: str = "forward",
    ) -> None:
        if hook_type not in HOOK_TYPES:
            raise ValueError(f"hook_type {hook_type!r} is not one of {list(HOOK_TYPES)}")
        self.module_name = module_name
        self.expected_shape = expected_shape
        self.editing_function = editing_function
        self.unpack_idx = unpack_idx
        self.hook_type = hook_type
        self.save_ctx: Namespace | None = None
        self.modules: ModuleDict | None = None
        self._hook: Hook | None = None

    def _edit(self, tensor: Tensor, context: HookContext) -> Tensor | None:
        assert self.editing_function is not None
        return self.editing_function(context.module, tensor, context.save_ctx, context.probes)

    def __repr__(self) -> str:
        return f"HookFunction({self.module_name!r}, hook_type={self.hook_type!r})"


class FlexModel(Module):
    """Wraps a module for surgery with FlexModel's API; see the module docstring for what differs.

    ``module`` is a plain module or what ``fabric.setup`` returned. Captures go to
    ``output_ptr[module_name]``, a list with one owned CPU tensor per call, on the main process
    only. ``data_parallel_size`` and ``tensor_parallel_size`` are checked against the running
    processes; on one process no process group is needed. Pipeline parallel is not supported.
    """

    def __init__(
        self,
        module: Module,
        output_ptr: dict[str, list[Tensor]],
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        data_parallel_size: int = 1,
        process_group: Any | None = None,
    ) -> None:
        super().__init__()
        if pipeline_parallel_size != 1:
            raise NotImplementedError(
                f"pipeline_parallel_size={pipeline_parallel_size}: fab has no pipeline-parallel "
                "strategy yet, so surgery cannot follow activations across stages; use "
                "pipeline_parallel_size=1"
            )
        for label, size in (
            ("tensor_parallel_size", tensor_parallel_size),
            ("data_parallel_size", data_parallel_size),
        ):
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"{label} must be a positive int, got {size!r}")
        self.module = module
        self.output_ptr = output_ptr
        self.tp_size = tensor_parallel_size
        self.pp_size = pipeline_parallel_size
        self.dp_size = data_parallel_size
        self.process_group = process_group
        layout = _facade_layout(module, tensor_parallel_size, data_parallel_size, process_group)
        object.__setattr__(self, "_surgery", Surgery(module, layout=layout))
        self._hook_functions: dict[HookFunction, Hook] = {}

    # -- state shared with the hook functions -----------------------------------------------------

    @property
    def surgery(self) -> Surgery:
        """The native surgery underneath."""
        surgery: Surgery = self.__dict__["_surgery"]
        return surgery

    @property
    def save_ctx(self) -> Namespace:
        return self.surgery.save_ctx

    @property
    def trainable_modules(self) -> ModuleDict:
        return self.surgery.probes

    def register_trainable_module(self, name: str, module: Module) -> None:
        """Add a probe: a submodule of the wrapped model (``surgery_probes.<name>``), so it is in
        ``parameters()`` of both, set up and checkpointed with the model."""
        self.surgery.add_probe(name, module)

    # -- registering ------------------------------------------------------------------------------

    def register_forward_hook(self, hook_function: HookFunction) -> None:  # type: ignore[override]
        self._register(hook_function, "forward")

    def register_forward_pre_hook(self, hook_function: HookFunction) -> None:  # type: ignore[override]
        self._register(hook_function, "forward_pre")

    def register_full_backward_hook(self, hook_function: HookFunction) -> None:  # type: ignore[override]
        self._register(hook_function, "full_backward")

    def register_full_backward_pre_hook(self, hook_function: HookFunction) -> None:  # type: ignore[override]
        self._register(hook_function, "backward_pre")

    def register_hook(self, hook_function: HookFunction) -> None:
        """A hook on a parameter's gradient (``module_name`` names the parameter)."""
        self._register(hook_function, "tensor")

    def _register(self, hook_function: HookFunction, hook_type: str) -> None:
        if hook_function._hook is not None:
            raise ValueError(f"{hook_function!r} is registered already")
        hook_function.hook_type = hook_type
        edit = hook_function._edit if hook_function.editing_function is not None else None
        (hook,) = self.surgery.add(
            hook_function.module_name,
            HOOK_TYPES[hook_type],
            part=Leaf(hook_function.unpack_idx) if hook_function.unpack_idx else None,
            edit=edit,
            capture=True,
            sink=self._sink,
        )
        hook_function._hook = hook
        hook_function.save_ctx = self.save_ctx
        hook_function.modules = self.trainable_modules
        self._hook_functions[hook_function] = hook

    def _sink(self, key: str, tensor: Tensor) -> None:
        name = key.split(":", 1)[0]
        self.output_ptr.setdefault(name, []).append(tensor)

    # -- groups -----------------------------------------------------------------------------------

    def create_hook_group(
        self,
        group_name: str,
        group_constructor: str,
        expected_shape: Sequence[int | None] | None = None,
        editing_function: EditingFunction | None = None,
        unpack_idx: int = 0,
        hook_type: str = "forward",
    ) -> list[HookFunction]:
        """A hook function on every module (parameter, for ``hook_type="tensor"``) whose name
        contains ``group_constructor`` (or matches it as a glob), all in ``group_name``."""
        root = original_module(self.module)
        if hook_type == "tensor":
            names = [n for n, _ in root.named_parameters()]
        else:
            names = [n for n, _ in root.named_modules()]
        names = [
            n
            for n in names
            if not (n == PROBES_ATTRIBUTE or n.startswith(PROBES_ATTRIBUTE + "."))
            and _constructs(group_constructor, n)
        ]
        if not names:
            raise LookupError(
                f"create_hook_group({group_name!r}, {group_constructor!r}): no "
                f"{'parameter' if hook_type == 'tensor' else 'module'} name contains it"
            )
        made = []
        for name in names:
            function = HookFunction(name, expected_shape, editing_function, unpack_idx, hook_type)
            self._register(function, hook_type)
            self.surgery.group(group_name, function._hook)  # type: ignore[arg-type]
            made.append(function)
        return made

    def update_hook_groups(
        self, group_constructor: list[HookFunction] | HookFunction | str, group_name: str
    ) -> None:
        """Add ``group_name`` to hook functions (given, or whose module name matches)."""
        for function in self._select(group_constructor):
            self.surgery.group(group_name, self._hook_functions[function])

    def remove_hook_groups(
        self, group_constructor: list[HookFunction] | HookFunction | str, group_name: str
    ) -> None:
        """Remove ``group_name`` from hook functions (given, or whose module name matches)."""
        for function in self._select(group_constructor):
            self.surgery.ungroup(group_name, self._hook_functions[function])

    def get_group_hook_functions(self, group_name: str) -> list[HookFunction]:
        return [f for f, h in self._hook_functions.items() if group_name in h.groups]

    def get_hook_function_groups(self, hook_function: HookFunction) -> set[str]:
        hook = self._hook_functions.get(hook_function)
        if hook is None:
            raise KeyError(f"{hook_function!r} is not registered with this FlexModel")
        return set(hook.groups)

    def _select(self, constructor: list[HookFunction] | HookFunction | str) -> list[HookFunction]:
        if isinstance(constructor, HookFunction):
            chosen = [constructor]
        elif isinstance(constructor, str):
            chosen = [f for f in self._hook_functions if _constructs(constructor, f.module_name)]
        else:
            chosen = list(constructor)
        for function in chosen:
            if function not in self._hook_functions:
                raise KeyError(f"{function!r} is not registered with this FlexModel")
        return chosen

    # -- running ----------------------------------------------------------------------------------

    def forward(
        self,
        *args: Any,
        groups: str | list[str] = ALL,
        complement: bool = False,
        **kwargs: Any,
    ) -> Any:
        """A forward with the hook functions of ``groups`` (all by default), or with
        ``complement`` all but those."""
        return self.surgery.forward(*args, groups=groups, complement=complement, **kwargs)

    # -- parameters -------------------------------------------------------------------------------

    def get_module_parameter(
        self, parameter_name: str, expected_shape: Sequence[int | None] | None = None
    ) -> Tensor:
        """The whole parameter on CPU, whatever the sharding (``expected_shape`` is not needed)."""
        return self.surgery.read_parameter(parameter_name)

    def wrapped_module_requires_grad(self, level: bool) -> None:
        """Set ``requires_grad`` of the wrapped model's own parameters (not the probes')."""
        probes = {id(p) for p in self.trainable_modules.parameters()}
        for parameter in original_module(self.module).parameters():
            if id(parameter) not in probes:
                parameter.requires_grad_(level)

    def trainable_modules_requires_grad(self, level: bool) -> None:
        self.trainable_modules.requires_grad_(level)

    @property
    def wrapped_module_names(self) -> list[str]:
        return [
            n
            for n, _ in original_module(self.module).named_modules()
            if not (n == PROBES_ATTRIBUTE or n.startswith(PROBES_ATTRIBUTE + "."))
        ]

    @property
    def trainable_modules_names(self) -> list[str]:
        return list(self.trainable_modules.keys())

    @property
    def all_modules_names(self) -> list[str]:
        return self.wrapped_module_names + self.trainable_modules_names

    def restore(self) -> Module:
        """Remove every hook and probe; returns the wrapped module as it was."""
        self.surgery.restore()
        for function in self._hook_functions:
            function._hook = None
        self._hook_functions.clear()
        return self.module


def _constructs(constructor: str, name: str) -> bool:
    from fab.wrappers.surgery.names import _glob_match, is_pattern

    return _glob_match(name, constructor) if is_pattern(constructor) else constructor in name


def _facade_layout(
    module: Module, tensor_parallel: int, data_parallel: int, group: Any | None
) -> SurgeryLayout:
    import torch.distributed as dist

    requested = tensor_parallel * data_parallel
    if not (dist.is_available() and dist.is_initialized()):
        if requested != 1:
            raise LayoutError(
                f"tensor_parallel_size={tensor_parallel} and data_parallel_size={data_parallel} "
                "need a running torch.distributed process group (launch with Fabric or "
                "torchrun); on one process leave both at 1"
            )
        return LocalLayout()
    chosen = group if group is not None else dist.group.WORLD
    world = dist.get_world_size(chosen)
    if requested != world:
        raise LayoutError(
            f"tensor_parallel_size={tensor_parallel} x data_parallel_size={data_parallel} = "
            f"{requested}, but the process group has {world} processes; the sizes must "
            "multiply to the group's size"
        )
    if tensor_parallel > 1:
        layout = resolve_layout(module, original_module(module))
        if isinstance(layout, (LocalLayout, DataParallelLayout)):
            raise LayoutError(
                f"tensor_parallel_size={tensor_parallel}: the split of tensor-parallel "
                "activations comes from the strategy that parallelized the model; set the "
                "model up with Fabric and a tensor-parallel strategy that provides a surgery "
                "layout and pass what fabric.setup returned"
            )
        return layout
    if world == 1:
        return LocalLayout()
    if group is None:
        try:
            return resolve_layout(module, original_module(module))
        except LayoutError:
            pass
    return DataParallelLayout(chosen)


__all__ = ["HOOK_TYPES", "FlexModel", "HookFunction"]
