"""Fabric's public API has Lightning Fabric 2.6's signatures: the same methods and properties,
the same parameter names, kinds and defaults, so code written for ``lightning.fabric`` calls fab
unchanged. The expected list is written out here, read from ``lightning_fabric/fabric.py`` of
lightning-fabric 2.6.0 (``pip download lightning-fabric==2.6.0``)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from fab.core import Fabric

P = inspect.Parameter
NONE: Any = None
#: A parameter without a default.
REQUIRED: Any = P.empty
POS, VAR, KW, VAR_KW = P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL, P.KEYWORD_ONLY, P.VAR_KEYWORD

#: Lightning 2.6: method -> [(name, kind, default)], ``self`` left out.
LIGHTNING_2_6: dict[str, list[tuple[str, Any, Any]]] = {
    "__init__": [
        ("accelerator", KW, "auto"),
        ("strategy", KW, "auto"),
        ("devices", KW, "auto"),
        ("num_nodes", KW, 1),
        ("precision", KW, NONE),
        ("plugins", KW, NONE),
        ("callbacks", KW, NONE),
        ("loggers", KW, NONE),
    ],
    "run": [("args", VAR, REQUIRED), ("kwargs", VAR_KW, REQUIRED)],
    "setup": [
        ("module", POS, REQUIRED),
        ("optimizers", VAR, REQUIRED),
        ("scheduler", KW, NONE),
        ("move_to_device", KW, True),
        ("_reapply_compile", KW, True),
    ],
    "setup_module": [
        ("module", POS, REQUIRED),
        ("move_to_device", POS, True),
        ("_reapply_compile", POS, True),
    ],
    "setup_optimizers": [("optimizers", VAR, REQUIRED)],
    "setup_dataloaders": [
        ("dataloaders", VAR, REQUIRED),
        ("use_distributed_sampler", KW, True),
        ("move_to_device", KW, True),
    ],
    "backward": [
        ("tensor", POS, REQUIRED),
        ("args", VAR, REQUIRED),
        ("model", KW, NONE),
        ("kwargs", VAR_KW, REQUIRED),
    ],
    "clip_gradients": [
        ("module", POS, REQUIRED),
        ("optimizer", POS, REQUIRED),
        ("clip_val", POS, NONE),
        ("max_norm", POS, NONE),
        ("norm_type", POS, 2.0),
        ("error_if_nonfinite", POS, True),
    ],
    "autocast": [],
    "to_device": [("obj", POS, REQUIRED)],
    "print": [("args", VAR, REQUIRED), ("kwargs", VAR_KW, REQUIRED)],
    "barrier": [("name", POS, NONE)],
    "broadcast": [("obj", POS, REQUIRED), ("src", POS, 0)],
    "all_gather": [("data", POS, REQUIRED), ("group", POS, NONE), ("sync_grads", POS, False)],
    "all_reduce": [("data", POS, REQUIRED), ("group", POS, NONE), ("reduce_op", POS, "mean")],
    "rank_zero_first": [("local", POS, False)],
    "no_backward_sync": [("module", POS, REQUIRED), ("enabled", POS, True)],
    "sharded_model": [],
    "init_tensor": [],
    "init_module": [("empty_init", POS, NONE)],
    "save": [("path", POS, REQUIRED), ("state", POS, REQUIRED), ("filter", POS, NONE)],
    "load": [("path", POS, REQUIRED), ("state", POS, NONE), ("strict", POS, True)],
    "load_raw": [("path", POS, REQUIRED), ("obj", POS, REQUIRED), ("strict", POS, True)],
    # Lightning's default is a private do-nothing function; fab's is None (see FAB_DIFFERENCES)
    "launch": [("function", POS, NONE), ("args", VAR, REQUIRED), ("kwargs", VAR_KW, REQUIRED)],
    "call": [("hook_name", POS, REQUIRED), ("args", VAR, REQUIRED), ("kwargs", VAR_KW, REQUIRED)],
    "log": [("name", POS, REQUIRED), ("value", POS, REQUIRED), ("step", POS, NONE)],
    "log_dict": [("metrics", POS, REQUIRED), ("step", POS, NONE)],
    "seed_everything": [("seed", POS, NONE), ("workers", POS, NONE), ("verbose", POS, True)],
}
LIGHTNING_2_6_PROPERTIES = {
    "accelerator",
    "strategy",
    "device",
    "global_rank",
    "local_rank",
    "node_rank",
    "world_size",
    "is_global_zero",
    "loggers",
    "logger",
}
#: What fab adds, each after all of Lightning's parameters and with a default, so every call
#: written for Lightning means the same on fab. Listed in docs/decisions.md.
FAB_ADDITIONS: dict[str, list[tuple[str, Any, Any]]] = {
    # fab reads weights-only by default; its refusal tells the user to pass weights_only=False
    "load": [("weights_only", POS, NONE)],
    "load_raw": [("weights_only", POS, NONE)],
}


def _signature(name: str) -> list[tuple[str, Any, Any]]:
    parameters = list(inspect.signature(getattr(Fabric, name)).parameters.values())
    if name != "seed_everything":  # the one static method
        assert parameters[0].name == "self", name
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


@pytest.mark.parametrize("name", sorted(LIGHTNING_2_6))
def test_every_method_has_lightnings_parameters(name: str) -> None:
    expected = LIGHTNING_2_6[name] + FAB_ADDITIONS.get(name, [])
    assert _signature(name) == expected


def test_fab_has_exactly_lightnings_public_methods_and_properties() -> None:
    public = {n for n in vars(Fabric) if not n.startswith("_")}
    properties = {n for n in public if isinstance(vars(Fabric)[n], property)}
    assert properties == LIGHTNING_2_6_PROPERTIES
    assert public - properties == set(LIGHTNING_2_6) - {"__init__"}


def test_seed_everything_is_static_and_rank_zero_first_a_context_manager() -> None:
    assert isinstance(vars(Fabric)["seed_everything"], staticmethod)
    with Fabric().rank_zero_first():
        pass


def test_fabric_takes_its_arguments_by_keyword_only_as_lightning() -> None:
    with pytest.raises(TypeError, match="positional"):
        Fabric("cpu")  # type: ignore[misc]
