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

#: Names that a first-party package provides, so that asking for one of them without that package
#: installed says what to install. Names only: nothing here is imported.
KNOWN_PROVIDERS: Mapping[str, Mapping[str, str]] = {
    "fab.accelerators": {n: "fab-accelerators" for n in ("cuda", "gpu", "mps")},
    "fab.strategies": {
        n: "fab-strategies"
        for n in (
            "ddp",
            "ddp_spawn",
            "ddp_fork",
            "ddp_notebook",
            "ddp_find_unused_parameters_true",
            "ddp_find_unused_parameters_false",
            "dp",
            "fsdp",
            "model_parallel",
            "deepspeed",
        )
    },
    "fab.precision": {
        n: "fab-precision"
        for n in (
            "64-true",
            "16-mixed",
            "bf16-mixed",
            "16-true",
            "bf16-true",
            "transformer-engine",
            "transformer-engine-float16",
            "bitsandbytes",
        )
    },
    "fab.environments": {
        n: "fab-strategies" for n in ("fab", "torchelastic", "slurm", "lsf", "mpi", "kubeflow")
    },
    "fab.loggers": {n: "fab-loggers" for n in ("csv", "tensorboard", "mlflow")},
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
