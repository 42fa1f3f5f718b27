"""Fixtures for the plugin integration tests.

These tests need the example third-party distribution tests-integration/plugins/acme-fab-plugins
installed in the running environment (``python tools/dev.py test`` installs it, editable, into the
development venv). Without it every test fails with a message saying how to install it: nothing is
skipped.

Checks that depend on a fresh process (what got imported, how often the installed distributions
were scanned, what environment variables said at start-up) run Python in a subprocess through the
``run_python`` and ``run_fab`` fixtures, always under a timeout. Checks in this process switch the
plugin environment variables with ``plugin_env``, which rescans with ``registry.refresh()``.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

PLUGIN_DIST = "acme-fab-plugins"
PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugins" / "acme-fab-plugins"
#: Every good plugin of the example distribution, by group.
ACME_PLUGINS: Mapping[str, str] = {
    "fab.accelerators": "acme",
    "fab.strategies": "acme_single",
    "fab.precision": "acme-true",
    "fab.environments": "acme_env",
    "fab.loggers": "acme_memory",
    "fab.callbacks": "acme_counter",
}
#: The deliberately broken ones (all in fab.strategies).
BROKEN_PLUGINS = ("acme_missing_dep", "acme_not_a_strategy")
#: Environment variables that change which plugins the registry sees or what they do.
PLUGIN_ENV_PREFIXES = ("FAB_DISABLE_PLUGIN_AUTOLOAD", "FAB_DISABLED_PLUGINS", "ACME_")
#: Seconds any subprocess of these tests may take (importing torch takes ~1.5 s of them).
SUBPROCESS_TIMEOUT = 90


def _plugin_problem() -> str | None:
    """Why the example plugins cannot be used here, or None when they can."""
    install = (
        "pip install -e tests-integration/plugins/acme-fab-plugins (`python tools/dev.py test` "
        f"installs it in the development venv); this Python is {sys.executable}"
    )
    try:
        dist = importlib.metadata.distribution(PLUGIN_DIST)
    except importlib.metadata.PackageNotFoundError:
        return f"{PLUGIN_DIST} is not installed: {install}"
    registered = {(ep.group, ep.name) for ep in dist.entry_points}
    missing = [f"{g}:{n}" for g, n in ACME_PLUGINS.items() if (g, n) not in registered]
    missing += [
        f"fab.strategies:{n}" for n in BROKEN_PLUGINS if ("fab.strategies", n) not in registered
    ]
    if missing:
        return (
            f"the installed {PLUGIN_DIST} {dist.version} lacks the entry points {missing} (stale, "
            f"or not the one in {PLUGIN_DIR}): {install}"
        )
    return None


@pytest.fixture(scope="session")
def acme_plugins() -> Mapping[str, str]:
    """The working plugins of acme-fab-plugins: entry-point group -> name."""
    return ACME_PLUGINS


@pytest.fixture(scope="session", autouse=True)
def _acme_plugins_installed() -> None:
    """Fail (never skip) every test when the example plugins are not installed."""
    problem = _plugin_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)


# --- the plugin environment in this process -----------------------------------------------------


@pytest.fixture(autouse=True)
def plugin_env() -> Iterator[Callable[..., None]]:
    """Start every test from the default plugin environment, and give a setter for it.

    ``plugin_env(FAB_DISABLED_PLUGINS="...", ACME_AVAILABLE="1")`` sets the variables (None
    removes one) and rescans the installed distributions with ``registry.refresh()``. After the
    test, the environment is restored and the registry rescanned again.
    """
    from fab.core import registry

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(PLUGIN_ENV_PREFIXES):
                mp.delenv(key)

        def set_env(**values: str | None) -> None:
            for key, value in values.items():
                if value is None:
                    mp.delenv(key, raising=False)
                else:
                    mp.setenv(key, value)
            registry.refresh()

        registry.refresh()
        yield set_env
    registry.refresh()


# --- subprocesses -------------------------------------------------------------------------------


def _subprocess_env(env: Mapping[str, str] | None, pythonpath: Sequence[Path]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(PLUGIN_ENV_PREFIXES)}
    # Hide any GPU, so that accelerator="auto" means the same on every machine.
    base["CUDA_VISIBLE_DEVICES"] = ""
    base["PYTHONDONTWRITEBYTECODE"] = "1"
    paths = [str(p) for p in pythonpath]
    if base.get("PYTHONPATH"):
        paths.append(base["PYTHONPATH"])
    if paths:
        base["PYTHONPATH"] = os.pathsep.join(paths)
    base.update(env or {})
    return base


def _run(cmd: Sequence[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        output = [_text(err.stdout), _text(err.stderr)]
        pytest.fail(f"{cmd[:2]} took more than {SUBPROCESS_TIMEOUT} s:\n" + "\n".join(output))


def _text(output: str | bytes | None) -> str:
    """TimeoutExpired may hold bytes even with ``text=True``."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


RESULT_MARKER = "@@result@@"


@pytest.fixture(scope="session")
def run_python(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Any]:
    """Run ``code`` in a fresh Python (the one running the tests); return what it reports.

    The code calls ``report(value)`` (predefined) with a JSON-serializable value; that value is
    returned. A non-zero exit fails the test with the subprocess's output. ``env`` adds environment
    variables (the plugin variables of this process are never passed on); ``pythonpath`` puts
    directories first on ``sys.path``.
    """

    def run(
        code: str, *, env: Mapping[str, str] | None = None, pythonpath: Sequence[Path] = ()
    ) -> Any:
        prelude = (
            "import json as _json\n"
            "def report(value):\n"
            f"    print({RESULT_MARKER!r} + _json.dumps(value), flush=True)\n"
        )
        workdir = tmp_path_factory.mktemp("python")
        script = workdir / "snippet.py"
        script.write_text(prelude + textwrap.dedent(code), encoding="utf-8")
        proc = _run([sys.executable, str(script)], _subprocess_env(env, pythonpath), workdir)
        if proc.returncode != 0:
            pytest.fail(f"the subprocess exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        results = [
            line[len(RESULT_MARKER) :]
            for line in proc.stdout.splitlines()
            if line.startswith(RESULT_MARKER)
        ]
        if len(results) != 1:
            pytest.fail(
                f"the subprocess reported {len(results)} results:\n{proc.stdout}\n{proc.stderr}"
            )
        return json.loads(results[0])

    return run


@pytest.fixture(scope="session")
def fab_script() -> Path:
    """The ``fab`` console script of the environment running the tests."""
    scripts = Path(sys.executable).parent
    found = shutil.which("fab", path=str(scripts))
    if found is None:
        pytest.fail(f"no `fab` console script next to {sys.executable}; is fab-core installed?")
    return Path(found)


@pytest.fixture(scope="session")
def run_fab(
    fab_script: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the ``fab`` console script with ``args``; same ``env`` and ``pythonpath`` as
    ``run_python``. Returns the completed process (the caller checks the exit status)."""

    def run(
        *args: str, env: Mapping[str, str] | None = None, pythonpath: Sequence[Path] = ()
    ) -> subprocess.CompletedProcess[str]:
        workdir = tmp_path_factory.mktemp("fab")
        return _run([str(fab_script), *args], _subprocess_env(env, pythonpath), workdir)

    return run


# --- throwaway distributions ---------------------------------------------------------------------


@pytest.fixture
def make_dist(tmp_path: Path) -> Callable[..., Path]:
    """Write an installed-looking distribution, without pip: ``<name>-<version>.dist-info/`` with
    METADATA and entry_points.txt, plus plain modules, in a new directory under ``tmp_path``.

    Returns that directory; put it on the subprocess's ``pythonpath`` and importlib.metadata (so
    fab's registry) discovers the distribution as if it were installed there.
    """

    def make(
        name: str,
        version: str,
        entry_points: Mapping[str, Mapping[str, str]],
        modules: Mapping[str, str] | None = None,
    ) -> Path:
        root = tmp_path / f"site-{name}"
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
        )
        sections = [
            f"[{group}]\n" + "".join(f"{ep} = {target}\n" for ep, target in eps.items())
            for group, eps in entry_points.items()
        ]
        (info / "entry_points.txt").write_text("\n".join(sections), encoding="utf-8")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        return root

    return make
