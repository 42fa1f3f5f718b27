"""One surgery hook: where it sits, what it captures and edits, and the torch hook that runs it."""

from __future__ import annotations

import inspect
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from torch import Tensor
from torch.nn import Module, ModuleDict
from torch.utils.hooks import RemovableHandle

from fab.wrappers.surgery.captures import Sink
from fab.wrappers.surgery.structure import Leaf, Part, Path, get, replace, resolve, tensor_paths

if TYPE_CHECKING:
    from fab.wrappers.surgery.surgery import Surgery

#: Where a hook sits. ``output``: a module's forward output; ``input``: its forward inputs
#: (positional and keyword); ``grad_output``: the gradient of the loss with respect to its output;
#: ``grad_input``: with respect to its inputs; ``param_grad``: a parameter's gradient.
Point: TypeAlias = Literal["output", "input", "grad_output", "grad_input", "param_grad"]
POINTS: tuple[Point, ...] = ("output", "input", "grad_output", "grad_input", "param_grad")


@dataclass
class HookContext:
    """What an edit function gets besides the tensor."""

    module: Module | None
    """The hooked module (``None`` for a parameter gradient)."""
    name: str
    """The module's (or parameter's) name in the user's model."""
    point: Point
    save_ctx: Namespace
    """Shared by every hook of the surgery, across forwards."""
    probes: ModuleDict
    """The surgery's probe modules, by name."""


#: ``edit(tensor, context)`` returns the tensor to use instead, or ``None`` to keep it.
EditFunction: TypeAlias = Callable[[Tensor, HookContext], Tensor | None]


@dataclass(eq=False)
class Hook:
    """A hook on one module (or parameter). Compared and hashed by identity."""

    name: str
    point: Point
    key: str
    part: Part = None
    edit: EditFunction | None = None
    capture: bool = True
    batch_dim: int = 0
    sink: Sink | None = None
    groups: set[str] = field(default_factory=lambda: {"all"})
    enabled: bool = True
    site: Site | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        """Whether it runs in the next forward (or backward)."""
        return self.site is not None and self in self.site.active


class Site:
    """One torch hook on one module (or parameter) at one point, running the surgery's active
    hooks there in the order they were added."""

    def __init__(self, target: Module | Tensor, point: Point) -> None:
        self.target = target
        self.point = point
        self.hooks: list[Hook] = []
        self.active: list[Hook] = []
        self.handle: RemovableHandle | None = None

    def activate(self, hooks: set[Hook], surgery: Surgery) -> None:
        self.active = [h for h in self.hooks if h in hooks]
        if self.active and self.handle is None:
            self.handle = self._install(surgery)
        elif not self.active and self.handle is not None:
            self.handle.remove()
            self.handle = None

    def _install(self, surgery: Surgery) -> RemovableHandle:
        target = self.target
        if isinstance(target, Tensor):
            handle: RemovableHandle = target.register_hook(  # type: ignore[no-untyped-call]
                _param_grad_hook(self, surgery)
            )
            return handle
        if self.point == "output":
            # prepend: runs before a strategy's own post-forward hooks (tensor parallel's output
            # conversion, FSDP's reshard), so it sees what the module itself returned.
            return target.register_forward_hook(_output_hook(self, surgery), prepend=True)
        if self.point == "input":
            return target.register_forward_pre_hook(
                _input_hook(self, surgery, target), with_kwargs=True
            )
        if self.point == "grad_output":
            return target.register_full_backward_pre_hook(_grad_output_hook(self, surgery))
        return target.register_full_backward_hook(_grad_input_hook(self, surgery))


def run_hook(
    hook: Hook,
    surgery: Surgery,
    module: Module | None,
    structure: object,
    what: str,
    part: Part = None,
) -> Any | None:
    """Capture and edit the part of ``structure`` the hook names (``part``, for inputs, else the
    hook's); the new structure, or ``None`` when nothing was edited."""
    selected = part if part is not None else hook.part
    path: Path
    if selected is None and isinstance(structure, Tensor):
        path, tensor = (), structure  # the common case, a module returning one tensor
    else:
        if hook.point in ("grad_input", "grad_output") and not tensor_paths(structure):
            return None  # no gradient flows there (an input that needs none): nothing to capture
        try:
            path = resolve(structure, selected)
        except LookupError as error:
            raise LookupError(
                f"surgery hook on {hook.name!r} ({hook.point}): {what} {error}"
            ) from None
        tensor = get(structure, path)
    # (the hot path of every capture: attribute reads rather than calls where it is the same)
    layout = surgery._layout if surgery._layout is not None else surgery.layout
    if hook.capture:
        whole = layout.gather(hook.name, tensor, hook.batch_dim)
        if whole is not None:
            if hook.sink is None:
                surgery.captures.add(hook.key, whole)
            else:
                hook.sink(hook.key, whole)
    if hook.edit is None:
        return None
    view = layout.local_view(hook.name, tensor)
    context = HookContext(module, hook.name, hook.point, surgery.save_ctx, surgery.probes)
    edited = hook.edit(view, context)
    if edited is None:
        return None
    if not isinstance(edited, Tensor) or edited.shape != view.shape:
        shown = tuple(edited.shape) if isinstance(edited, Tensor) else type(edited).__name__
        raise ValueError(
            f"the edit function of the surgery hook on {hook.name!r} ({hook.point}) returned "
            f"{shown}; it must return a tensor of the shape it was given, {tuple(view.shape)} "
            "(or None to keep it)"
        )
    return replace(structure, path, layout.from_local_view(hook.name, edited, tensor))


def _thread(
    site: Site, surgery: Surgery, module: Module | None, structure: Any, what: str
) -> Any | None:
    changed = False
    for hook in site.active:
        new = run_hook(hook, surgery, module, structure, what)
        if new is not None:
            structure, changed = new, True
    return structure if changed else None


def _output_hook(site: Site, surgery: Surgery) -> Callable[..., Any]:
    def forward_hook(module: Module, args: Any, output: Any) -> Any:
        changed = False
        for hook in site.active:
            new = run_hook(hook, surgery, module, output, "the output")
            if new is not None:
                output, changed = new, True
        return output if changed else None

    return forward_hook


def _input_hook(site: Site, surgery: Surgery, module: Module) -> Callable[..., Any]:
    positional = _positional_names(module)
    keyword_only = _keyword_only(module)

    def pre_hook(module: Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        inputs: Any = (args, kwargs)
        changed = False
        for hook in site.active:
            part = _input_part(hook.part, args, kwargs, positional, keyword_only)
            new = run_hook(hook, surgery, module, inputs, "the inputs (args, kwargs)", part)
            if new is not None:
                inputs, changed = new, True
                args, kwargs = inputs
        return (inputs[0], inputs[1]) if changed else None

    return pre_hook


def _input_part(
    part: Part,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    positional: list[str],
    keyword_only: set[str],
) -> Part:
    """Input parts: an int is a positional argument, a str a keyword argument, or the positional
    argument of that name wherever this call gave it."""
    if part is None or isinstance(part, Leaf):
        return part
    path = part if isinstance(part, tuple) else (part,)
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        return (0, head, *rest)
    if head in kwargs or head in keyword_only or head not in positional:
        return (1, head, *rest)
    index = positional.index(head)
    return (0, index, *rest) if index < len(args) else (1, head, *rest)


def _positional_names(module: Module) -> list[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def _keyword_only(module: Module) -> set[str]:
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _grad_output_hook(site: Site, surgery: Surgery) -> Callable[..., Any]:
    def backward_pre_hook(module: Module, grad_output: tuple[Tensor, ...]) -> Any:
        return _thread(site, surgery, module, grad_output, "the output gradients")

    return backward_pre_hook


def _grad_input_hook(site: Site, surgery: Surgery) -> Callable[..., Any]:
    def backward_hook(
        module: Module, grad_input: tuple[Tensor | None, ...], grad_output: tuple[Tensor, ...]
    ) -> Any:
        return _thread(site, surgery, module, grad_input, "the input gradients")

    return backward_hook


def _param_grad_hook(site: Site, surgery: Surgery) -> Callable[[Tensor], Tensor | None]:
    def tensor_hook(grad: Tensor) -> Tensor | None:
        changed = False
        for hook in site.active:
            edited = _param_grad(hook, surgery, grad)
            if edited is not None:
                grad, changed = edited, True
        return grad if changed else None

    return tensor_hook


def _param_grad(hook: Hook, surgery: Surgery, grad: Tensor) -> Tensor | None:
    layout = surgery.layout
    if hook.capture:
        whole = layout.full_parameter(hook.name, layout.reduce_gradient(hook.name, grad))
        if layout.is_main:
            surgery._deliver(hook, whole.detach().to("cpu", copy=True))
    if hook.edit is None:
        return None
    context = HookContext(None, hook.name, hook.point, surgery.save_ctx, surgery.probes)
    edited = hook.edit(grad, context)
    if edited is not None and edited.shape != grad.shape:
        raise ValueError(
            f"the edit function of the surgery hook on parameter {hook.name!r} returned a "
            f"tensor of shape {tuple(edited.shape)}; it must keep the shape "
            f"{tuple(grad.shape)} (or return None)"
        )
    return edited
