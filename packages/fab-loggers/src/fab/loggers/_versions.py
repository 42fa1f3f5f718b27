"""Run versions as folders: ``<root_dir>/<name>/version_<N>``, the layout of Lightning's loggers.

A version that is not given is *claimed*: global rank 0 creates its folder with ``os.mkdir``,
which fails if the folder exists, so two runs started together with the same root never share a
version. The claim happens when the logger is created, in the process that creates it.

The other ranks of the run must name the same folder without claiming one. A launcher that
starts the other ranks after the logger exists (strategy ``ddp`` re-runs the script, as
``torchrun`` would) hands them the environment of rank 0, so rank 0 records each claim in an
environment variable that the ranks it starts read. ``ddp_spawn`` and ``ddp_fork`` copy the logger
itself, version included. Where neither happened (every rank started by an outside launcher),
``version`` is None on the other ranks and ``log_dir`` raises an error that says so.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from fab.core.utilities.rank_zero import rank_zero_only

_VERSION_DIR = re.compile(r"^version_(\d+)$")
#: ``<prefix><digest of the logger class and the experiment folder>`` = the versions claimed there
#: by this process (and the processes that started it), comma-separated, in the order claimed.
CLAIMS_ENV_PREFIX = "FAB_LOGGER_VERSIONS_"

_claimed_here: set[str] = set()  # the variables this process has written
_read_here: dict[str, int] = {}  # variable -> how many of its versions this process has taken


def next_version(experiment_dir: str | Path) -> int:
    """One more than the highest ``version_N`` folder in ``experiment_dir`` (0 if there is none)."""
    try:
        names = os.listdir(experiment_dir)
    except FileNotFoundError:
        return 0
    taken = [
        int(match.group(1))
        for name in names
        if (match := _VERSION_DIR.match(name)) and os.path.isdir(os.path.join(experiment_dir, name))
    ]
    return max(taken, default=-1) + 1


def claim_version(experiment_dir: str | Path) -> int:
    """Create ``experiment_dir/version_<N>`` for the next free N and return N. Creating the folder
    is the claim: when another process created it first, the next N is tried."""
    os.makedirs(experiment_dir, exist_ok=True)
    version = next_version(experiment_dir)
    while True:
        try:
            os.mkdir(os.path.join(experiment_dir, version_dir_name(version)))
        except FileExistsError:
            version = max(version + 1, next_version(experiment_dir))
            continue
        return version


def check_version(version: int | str | None) -> int | str | None:
    """``version`` if it can name a folder: None (the next free one), an int >= 0, or a non-empty
    string that is a single path component."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int | str):
        raise TypeError(f"version must be an int, a str or None, got {version!r}")
    if isinstance(version, int):
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        return version
    if not version.strip() or version in {".", ".."} or "/" in version or os.sep in version:
        raise ValueError(
            f"version {version!r} cannot name a folder: give an int >= 0 or a plain folder name"
        )
    return version


def version_dir_name(version: int | str) -> str:
    """``version_<N>`` for an int, the string itself otherwise."""
    return version if isinstance(version, str) else f"version_{version}"


def _claims_variable(kind: str, experiment_dir: str) -> str:
    key = f"{kind}\0{os.path.abspath(experiment_dir)}".encode()
    return CLAIMS_ENV_PREFIX + hashlib.sha1(key, usedforsecurity=False).hexdigest()[:16].upper()


def _record_claim(variable: str, version: int) -> None:
    """Add ``version`` to ``variable`` for the ranks this process starts later. The first claim
    of a process replaces what it inherited: that came from another run."""
    earlier = os.environ.get(variable, "") if variable in _claimed_here else ""
    os.environ[variable] = f"{earlier},{version}" if earlier else str(version)
    _claimed_here.add(variable)


def _inherited_claim(variable: str) -> int | None:
    """The version rank 0 claimed for this process's next logger of the kind, if rank 0 started
    this process after claiming it."""
    claims = [v for v in os.environ.get(variable, "").split(",") if v.strip().isdigit()]
    taken = _read_here.get(variable, 0)
    if taken >= len(claims):
        return None
    _read_here[variable] = taken + 1
    return int(claims[taken])


def _is_global_zero() -> bool:
    return int(rank_zero_only.rank) == 0  # type: ignore[attr-defined]


class VersionedFolders:
    """For a logger that writes files: ``name``, ``version``, ``root_dir`` (the root as given) and
    the run's folder ``<root_dir>/<name>/version_<N>``, N claimed unless given."""

    _root: str
    _name: str
    _version: int | str | None

    def _init_folders(
        self, root_dir: str | os.PathLike[str], name: str | None, version: int | str | None
    ) -> bool:
        """Set the folders up, claiming a version on global rank 0 when none is given; True when
        the version was given (it may exist already)."""
        self._root = os.fspath(root_dir)
        self._name = name or ""
        given = check_version(version)
        if given is not None:
            self._version = given
            return True
        variable = _claims_variable(type(self).__name__, self._experiment_dir())
        if _is_global_zero():
            self._version = claim_version(self._experiment_dir())
            _record_claim(variable, self._version)
        else:
            self._version = _inherited_claim(variable)
        return False

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str | None:
        """The run's version; None on a rank other than 0 that was not told rank 0's claim."""
        return self._version

    @property
    def root_dir(self) -> str:
        """The folder given as ``root_dir``: every experiment's folder lives under it."""
        return self._root

    #: Expand ``~`` and ``$VARS`` in the folders (TensorBoardLogger does, as in Lightning).
    _expand_paths = False

    def _experiment_dir(self) -> str:
        """``<root_dir>/<name>``: the folder of every version of this experiment."""
        path = os.path.join(self._root, self._name)
        return os.path.expandvars(os.path.expanduser(path)) if self._expand_paths else path

    def _version_dir(self) -> str:
        """``<root_dir>/<name>/version_<N>``."""
        if self._version is None:
            rank = rank_zero_only.rank  # type: ignore[attr-defined]
            raise RuntimeError(
                f"{type(self).__name__}(root_dir={self._root!r}, name={self._name!r}) has no "
                f"version on global rank {rank}: a version that is not given is claimed by rank "
                "0, and this process was not started by rank 0 after the claim (an outside "
                "launcher started it, or the logger was created after fabric.launch()). Create "
                "the logger before fabric.launch(), give it a version, or read log_dir on rank 0 "
                "only"
            )
        return os.path.join(self._experiment_dir(), version_dir_name(self._version))
