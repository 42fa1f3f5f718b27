"""The entry-point groups fab reads, the distributions that are fab's own, and the names they
provide (data only: nothing here imports a plugin)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DISABLE_AUTOLOAD_ENV = "FAB_DISABLE_PLUGIN_AUTOLOAD"
DISABLED_PLUGINS_ENV = "FAB_DISABLED_PLUGINS"

#: fab's own distributions, in layer order.
FAB_PACKAGES = (
    "fab-core",
    "fab-wrappers",
    "fab-lazy",
    "fab-accelerators",
    "fab-strategies",
    "fab-precision",
    "fab-loggers",
)
#: Distributions whose entry points win a name collision, and which stay loaded when third-party
#: autoloading is switched off.
FIRST_PARTY_DISTRIBUTIONS = frozenset(FAB_PACKAGES)

#: The names each first-party plugin package registers, by entry-point group, so that asking for
#: one of them where that package is missing says what to install. A literal, kept equal to the
#: packages' ``[project.entry-points]`` by ``tools/check_invariants.py`` (check "known-providers"):
#: a name here that no package registers would send users to install a package that cannot help.
#: fab-core's own names are not listed: fab-core is always installed.
PROVIDED_NAMES: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "fab-accelerators": {"fab.accelerators": ("cuda", "gpu", "mps")},
    "fab-loggers": {"fab.loggers": ("csv", "mlflow", "tensorboard")},
    "fab-precision": {
        "fab.precision": (
            "16-mixed",
            "16-true",
            "64-true",
            "bf16-mixed",
            "bf16-true",
            "bitsandbytes",
            "transformer-engine",
            "transformer-engine-float16",
        )
    },
    "fab-strategies": {
        "fab.environments": ("fab", "kubeflow", "lsf", "mpi", "slurm", "torchelastic"),
        "fab.strategies": (
            "ddp",
            "ddp_find_unused_parameters_true",
            "ddp_fork",
            "ddp_notebook",
            "ddp_spawn",
            "dp",
            "fsdp",
            "fsdp_cpu_offload",
            "model_parallel",
        ),
    },
}

#: group -> name -> the first-party distribution that provides it (``PROVIDED_NAMES`` inverted).
KNOWN_PROVIDERS: Mapping[str, Mapping[str, str]] = {
    group: {
        name: distribution
        for distribution, groups in PROVIDED_NAMES.items()
        for name in groups.get(group, ())
    }
    for group in sorted({g for groups in PROVIDED_NAMES.values() for g in groups})
}


@dataclass(frozen=True)
class _Group:
    name: str
    short: str
    kind: str
    base: str | None  # "module:Class" of the base class, imported only to validate a plugin


GROUPS: Mapping[str, _Group] = {
    g.name: g
    for g in (
        _Group(
            "fab.accelerators",
            "accelerators",
            "accelerator",
            "fab.core.accelerators.accelerator:Accelerator",
        ),
        _Group("fab.strategies", "strategies", "strategy", "fab.core.strategies.strategy:Strategy"),
        _Group("fab.precision", "precision", "precision", "fab.core.precision.precision:Precision"),
        _Group(
            "fab.environments",
            "environments",
            "cluster environment",
            "fab.core.environments.environment:ClusterEnvironment",
        ),
        _Group("fab.loggers", "loggers", "logger", "fab.core.loggers.logger:Logger"),
        _Group("fab.callbacks", "callbacks", "callback", None),
    )
}


def group_of(spec: str) -> str | None:
    spec = spec.strip()
    if spec in GROUPS:
        return spec
    for g in GROUPS.values():
        if spec == g.short:
            return g.name
    return None
