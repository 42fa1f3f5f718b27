"""Run versions as folders: ``<root_dir>/<name>/version_<N>``, the layout of Lightning's
loggers."""

from __future__ import annotations

import os
import re
from pathlib import Path

_VERSION_DIR = re.compile(r"^version_(\d+)$")


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


class VersionedFolders:
    """For a logger that writes files: ``name``, ``version``, ``root_dir`` (``<root_dir>/<name>``)
    and the run's folder ``<root_dir>/<name>/version_<N>``, the next free N unless given."""

    _root: str
    _name: str
    _version: int | str

    def _init_folders(
        self, root_dir: str | os.PathLike[str], name: str | None, version: int | str | None
    ) -> bool:
        """Set the folders up; True when the version was given (it may exist already)."""
        self._root = os.fspath(root_dir)
        self._name = name or ""
        given = check_version(version)
        self._version = next_version(self.root_dir) if given is None else given
        return given is not None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        return self._version

    @property
    def root_dir(self) -> str:
        """``<root_dir>/<name>``: the folder of every version of this experiment."""
        return os.path.join(self._root, self._name)

    def _version_dir(self) -> str:
        """``<root_dir>/<name>/version_<N>``."""
        return os.path.join(self.root_dir, version_dir_name(self._version))
