"""Surgery: capture and edit a running model by module name, and put it back as it was."""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor
from torch.nn import Module, ModuleDict, Sequential

from fab.wrappers.surgery.captures import Captures, Sink
from fab.wrappers.surgery.hooks import POINTS, EditFunction, Hook, Point, Site
from fab.wrappers.surgery.layout import LayoutError, SurgeryLayout, is_dtensor, resolve_layout
from fab.wrappers.surgery.names import (
    PROBES_ATTRIBUTE,
    match_modules,
    match_parameters,
    original_module,
)
from fab.wrappers.surgery.structure import Part

#: Every hook is in this group; it cannot be left.
ALL = "all"

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


class Surgery:
    """Hooks on a model by its own module names: capture and edit activations, gradients and
    parameter gradients, in groups switched on and off per forward, with probe modules that are
    real submodules of the model.

    ``model`` is a plain module or what ``fabric.setup`` returned; hooks go on the user's module
    under any wrapper. Captures are whole (gathered over data-parallel processes by the
    ``layout``), owned copies on CPU, held by the main process only (``captures``), or given to
    a ``sink``. With no ``layout`` it is found from the model (see ``resolve_layout``) when first
    needed.
    """

    def __init__(self, model: Module, *, layout: SurgeryLayout | None = None) -> None:
        self._model = model
        self.module = original_module(model)
        self._explicit_layout = layout
        self._layout = layout
        self.save_ctx = Namespace()
        self.captures = Captures()
        self._hooks: list[Hook] = []
        self._sites: dict[tuple[int, Point], Site] = {}
        self._added_probes = False
        self._restored = False
        self._full_backward_flags: dict[Module, Any] = {}

    # -- where it runs ----------------------------------------------------------------------------

    @property
    def layout(self) -> SurgeryLayout:
        if self._layout is None:
            self._layout = resolve_layout(self._model, self.module)
        return self._layout

    def bind(self, model: Module) -> Surgery:
        """Use ``model`` (what ``fabric.setup`` returned for this surgery's module) to run
        forwards and to learn how activations are split over processes."""
        if original_module(model) is not self.module:
            raise ValueError(
                f"bind() takes the model this surgery hooks, set up by Fabric; got a "
                f"{type(original_module(model)).__name__} that is another module"
            )
        self._model = model
        self._layout = self._explicit_layout
        self._follow_replaced_parameters()
        return self

    def _follow_replaced_parameters(self) -> None:
        """Setting a model up may replace its parameters (tensor parallel and FSDP turn them into
        new DTensor parameters): move parameter-gradient hooks to the new ones, or refuse where a
        hook on the new one could never see the gradient (FSDP's)."""
        current = dict(self.module.named_parameters())
        for (_, point), site in list(self._sites.items()):
            if point != "param_grad" or not site.hooks:
                continue
            name = site.hooks[0].name
            now = current.get(name)
            if now is None or now is site.target:
                continue
            _refuse_unreachable_gradient(self.module, name, now)
            active = set(site.active)
            site.activate(set(), self)
            del self._sites[(id(site.target), point)]
            site.target = now
            self._sites[(id(now), point)] = site
            site.activate(active, self)

    # -- hooks ------------------------------------------------------------------------------------

    def add(
        self,
        pattern: str,
        point: Point = "output",
        *,
        part: Part = None,
        edit: EditFunction | None = None,
        capture: bool = True,
        groups: str | Iterable[str] = (),
        batch_dim: int = 0,
        sink: Sink | None = None,
    ) -> list[Hook]:
        """Hook every module (or, for ``point="param_grad"``, parameter) that ``pattern`` names.

        ``part`` selects the tensor in a structured output or the inputs (see
        ``fab.wrappers.surgery.structure``; for inputs an int is a positional argument and a str
        an argument by name). With ``capture``, the whole tensor is stored under the hook's key
        (the module name, or ``"<name>:<point>"`` for the other points) or given to ``sink``.
        ``edit(tensor, context)`` may return a tensor to use instead.
        """
        self._check_open()
        if point not in POINTS:
            raise ValueError(f"point {point!r} is not one of {list(POINTS)}")
        names = [groups] if isinstance(groups, str) else list(groups)
        targets: list[tuple[str, Module | Tensor]]
        if point == "param_grad":
            parameters = list(match_parameters(self.module, pattern))
            for name, parameter in parameters:
                _refuse_unreachable_gradient(self.module, name, parameter)
            targets = list(parameters)
        else:
            targets = list(match_modules(self.module, pattern))
        made = []
        for name, target in targets:
            key = name if point == "output" else f"{name}:{point}"
            hook = Hook(name, point, key, part, edit, capture, batch_dim, sink, {ALL, *names})
            site = self._sites.get((id(target), point))
            if site is None:
                site = self._sites[(id(target), point)] = Site(target, point)
            hook.site = site
            site.hooks.append(hook)
            if isinstance(target, Module) and point in ("grad_output", "grad_input"):
                self._full_backward_flags.setdefault(
                    target, target.__dict__.get("_is_full_backward_hook")
                )
            self._hooks.append(hook)
            made.append(hook)
        self._sync(None)
        return made

    def capture(self, pattern: str, point: Point = "output", **options: Any) -> list[Hook]:
        """Capture what ``pattern``'s modules produce at ``point`` (see :meth:`add`)."""
        return self.add(pattern, point, capture=True, **options)

    def edit(
        self, pattern: str, function: EditFunction, point: Point = "output", **options: Any
    ) -> list[Hook]:
        """Edit with ``function`` (``capture=True`` to also keep the tensor before the edit)."""
        options.setdefault("capture", False)
        return self.add(pattern, point, edit=function, **options)

    @property
    def hooks(self) -> list[Hook]:
        return list(self._hooks)

    def remove(self, hooks: Hook | Iterable[Hook]) -> None:
        for hook in [hooks] if isinstance(hooks, Hook) else list(hooks):
            if hook in self._hooks:
                self._hooks.remove(hook)
                if hook.site is not None:
                    hook.site.hooks.remove(hook)
        self._sync(None)

    # -- groups -----------------------------------------------------------------------------------

    def group(self, name: str, hooks: str | Hook | Iterable[Hook]) -> None:
        """Put hooks in group ``name``: given, or those whose module name ``hooks`` matches."""
        for hook in self._select(hooks):
            hook.groups.add(name)

    def ungroup(self, name: str, hooks: str | Hook | Iterable[Hook]) -> None:
        if name == ALL:
            raise ValueError(f"every hook is in the group {ALL!r}; it cannot leave it")
        for hook in self._select(hooks):
            hook.groups.discard(name)

    def groups(self) -> set[str]:
        return set().union(*(h.groups for h in self._hooks)) if self._hooks else set()

    def hooks_in(self, group: str) -> list[Hook]:
        return [h for h in self._hooks if group in h.groups]

    def enable(self, *groups: str) -> None:
        """Switch the hooks of these groups on (for every later forward)."""
        for hook in self._in_any(groups):
            hook.enabled = True
        self._sync(None)

    def disable(self, *groups: str) -> None:
        """Switch the hooks of these groups off (for every later forward)."""
        for hook in self._in_any(groups):
            hook.enabled = False
        self._sync(None)

    @contextmanager
    def only(self, groups: str | Iterable[str] = ALL, complement: bool = False) -> Iterator[None]:
        """Within the block only the hooks of ``groups`` run (with ``complement``, only the
        others); afterwards the hooks are as they were."""
        chosen = {groups} if isinstance(groups, str) else set(groups)
        active = {h for h in self._hooks if (not h.groups.isdisjoint(chosen)) != complement}
        self._sync(active)
        try:
            yield
        finally:
            self._sync(None)

    def forward(
        self,
        *args: Any,
        groups: str | Iterable[str] | None = None,
        complement: bool = False,
        **kw: Any,
    ) -> Any:
        """One forward of the model with only the hooks of ``groups`` (or, with ``complement``,
        all but those); with no ``groups``, the enabled hooks."""
        if groups is None and not complement:
            return self._model(*args, **kw)
        with self.only(ALL if groups is None else groups, complement):
            return self._model(*args, **kw)

    def _sync(self, active: set[Hook] | None) -> None:
        """Install the torch hooks the active hooks need, and only those (``None``: the enabled
        hooks are active)."""
        if active is None:
            active = {h for h in self._hooks if h.enabled}
        for site in self._sites.values():
            site.activate(active, self)

    def _select(self, hooks: str | Hook | Iterable[Hook]) -> list[Hook]:
        if isinstance(hooks, Hook):
            return [hooks]
        if isinstance(hooks, str):
            from fab.wrappers.surgery.names import _glob_match, is_pattern

            if is_pattern(hooks):
                return [h for h in self._hooks if _glob_match(h.name, hooks)]
            return [h for h in self._hooks if hooks in h.name]
        return list(hooks)

    def _in_any(self, groups: tuple[str, ...]) -> list[Hook]:
        wanted = set(groups) or {ALL}
        return [h for h in self._hooks if not h.groups.isdisjoint(wanted)]

    # -- probes -----------------------------------------------------------------------------------

    @property
    def probes(self) -> ModuleDict:
        """Probe modules by name: submodules of the model (``model.surgery_probes``)."""
        existing = self.module._modules.get(PROBES_ATTRIBUTE)
        if isinstance(existing, ModuleDict):
            return existing
        return ModuleDict()

    def add_probe(self, name: str, probe: Module) -> Module:
        """Make ``probe`` a submodule of the model (``model.surgery_probes[name]``), so it is in
        ``model.parameters()``, the strategy sets it up with the model (DDP averages its
        gradients) and checkpoints hold it. Add probes before ``fabric.setup``."""
        self._check_open()
        if _set_up_by_a_wrapper(self._model, self.module):
            raise RuntimeError(
                f"add probe {name!r} before the model is set up (fabric.setup): the strategy "
                "sets up the parameters the model has at that time, so a probe added later "
                "would not be wrapped, synchronized or sharded with it. Create the Surgery on "
                "the plain model, add probes, then call fabric.setup and surgery.bind(model)"
            )
        if isinstance(self.module, Sequential):
            raise TypeError(
                f"cannot add probe {name!r} to a {type(self.module).__name__}: its forward runs "
                "every child in turn, so a probe submodule would become a layer. Wrap the model "
                "in a module of your own (class Model(nn.Module) holding it as self.net) and "
                "create the Surgery on that"
            )
        probes = self.module._modules.get(PROBES_ATTRIBUTE)
        if probes is None:
            probes = ModuleDict()
            self.module.add_module(PROBES_ATTRIBUTE, probes)
            self._added_probes = True
        elif not isinstance(probes, ModuleDict):
            raise RuntimeError(
                f"the model already has an attribute {PROBES_ATTRIBUTE!r} that is a "
                f"{type(probes).__name__}, so probes cannot be added under it"
            )
        for parameter in self.module.parameters():
            probe.to(parameter.device)
            break
        probes[name] = probe
        return probe

    # -- parameters -------------------------------------------------------------------------------

    def read_parameter(self, name: str) -> Tensor:
        """The whole parameter ``name`` (the model's own name), as an owned copy on CPU."""
        matches = match_parameters(self.module, name)
        if len(matches) != 1:
            raise LookupError(
                f"read_parameter takes one parameter name; {name!r} names {len(matches)}: "
                f"{[n for n, _ in matches][:8]}"
            )
        whole = self.layout.full_parameter(name, matches[0][1])
        return whole.detach().to("cpu", copy=True)

    def read_gradient(self, name: str) -> Tensor:
        """The whole gradient of parameter ``name`` as an owned copy on CPU (after backward; under
        DDP and FSDP the averaged one). Every process must call it (it may be a collective)."""
        matches = match_parameters(self.module, name)
        if len(matches) != 1:
            raise LookupError(
                f"read_gradient takes one parameter name; {name!r} names {len(matches)}"
            )
        grad = matches[0][1].grad
        if grad is None:
            raise LookupError(
                f"parameter {name!r} has no gradient (no backward yet, or it does not require one)"
            )
        return self.layout.full_parameter(name, grad).detach().to("cpu", copy=True)

    # -- delivering captures ----------------------------------------------------------------------

    def _deliver(self, hook: Hook, tensor: Tensor) -> None:
        if hook.sink is not None:
            hook.sink(hook.key, tensor)
        else:
            self.captures.add(hook.key, tensor)

    # -- restoring --------------------------------------------------------------------------------

    def restore(self) -> Module:
        """Remove every hook and the probes this surgery added; the model is as it was before
        (the captures and ``save_ctx`` stay readable). Returns the user's module."""
        for site in self._sites.values():
            site.activate(set(), self)
        self._sites.clear()
        self._hooks.clear()
        for module, flag in self._full_backward_flags.items():
            module._is_full_backward_hook = flag
        self._full_backward_flags.clear()
        if self._added_probes and PROBES_ATTRIBUTE in self.module._modules:
            del self.module._modules[PROBES_ATTRIBUTE]
        self._added_probes = False
        self._restored = True
        return self.module

    def _check_open(self) -> None:
        if self._restored:
            raise RuntimeError("this surgery was restored; create a new Surgery to hook again")

    def __repr__(self) -> str:
        return (
            f"Surgery({type(self.module).__name__}, hooks={len(self._hooks)}, "
            f"groups={sorted(self.groups())})"
        )


def _set_up_by_a_wrapper(model: Module, original: Module) -> bool:
    """Whether a strategy's wrapper (DDP, ...) already holds the model's parameters."""
    from torch.nn.parallel import DistributedDataParallel

    from fab.wrappers.compiled import unwrap_compiled
    from fab.wrappers.module import FabricModule

    outer = unwrap_compiled(model)[0]
    if isinstance(outer, FabricModule):
        return unwrap_compiled(outer.forward_module)[0] is not original
    return isinstance(outer, DistributedDataParallel)


def _refuse_unreachable_gradient(root: Module, name: str, parameter: Tensor) -> None:
    """Raise where a hook on ``parameter`` would never see its gradient (FSDP's)."""
    if is_dtensor(parameter) and _managed_by_fsdp(root, name):
        raise LayoutError(
            f"parameter {name!r} is sharded by FSDP (a DTensor); its gradient is computed on an "
            "unsharded copy that a hook cannot reach, so a 'param_grad' hook would see "
            "nothing. Remove that hook and read the whole gradient after backward with "
            "surgery.read_gradient(name)"
        )


def _managed_by_fsdp(root: Module, parameter_name: str) -> bool:
    """Whether FSDP2 (``fully_shard``) manages the parameter: it or a module above it is an
    ``FSDPModule``. Such a parameter's gradient is computed on an unsharded copy and
    reduce-scattered into ``.grad``, so a hook on the sharded parameter never runs. A tensor
    parallel DTensor parameter takes part in autograd itself, and its hooks run."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # never imported here: it costs seconds
    fsdp_module = getattr(fsdp, "FSDPModule", None)
    if not isinstance(fsdp_module, type):
        return False
    module: Module | None = root
    above = parameter_name.split(".")[:-1]  # the names of the modules down to its own
    while module is not None:
        if isinstance(module, fsdp_module):
            return True
        if not above:
            return False
        module = module._modules.get(above.pop(0))
    return False


def hook_state(module: Module) -> dict[str, int]:
    """How many hooks ``module`` and its submodules and parameters hold, by kind (for checking
    that nothing is left)."""
    counts: dict[str, int] = {}
    for name, sub in module.named_modules():
        for attr in _HOOK_DICTS:
            hooks = getattr(sub, attr, None)
            if hooks:
                counts[f"{name}.{attr}"] = len(hooks)
    for name, parameter in module.named_parameters():
        hooks = parameter._backward_hooks
        if hooks:
            counts[f"{name}._backward_hooks"] = len(hooks)
    return counts
