"""Check fab's repository invariants (DESIGN.md sections 1 and 5).

Usage, from the repository root::

    python tools/check_invariants.py [--root DIR] [--wheels DIR] [--build]

Prints one line per check (``ok`` or ``FAIL``; a failing check prints one line per problem, with
where it is) and exits 1 if any check fails. The checks:

- namespace: no ``src/fab/__init__.py`` (PEP 420) nor ``src/__init__.py``; ``src/fab`` holds only
  the package's own leaf.
- py.typed: every leaf ``src/fab/<leaf>/`` ships ``py.typed``.
- requirements: every ``fab-*`` requirement (dependencies and extras) names an in-repo package,
  admits its in-repo version, and has an upper bound.
- dependency-graph: hard dependencies among fab packages are acyclic and point down the layers; the
  only upward edges are fab-core's extras.
- imports: L0 packages import nothing of fab but their own leaf; fab-core imports no L2 package;
  L2 packages import no other L2 package.
- declared-imports: every fab package a package's source imports (other than its own leaf) is
  declared in its ``[project.dependencies]``, so that installing it alone installs what it imports.
- known-providers: the table of names fab-core's registry attributes to each first-party plugin
  package (``PROVIDED_NAMES`` in ``fab/core/registry/groups.py``) equals those packages'
  ``[project.entry-points]``, so that an "install X" hint never names a package that lacks the name.
- package-files: README.md, CHANGELOG.md, tests/ and a static version in every package.
- wheels (``--wheels DIR``, ``--build``): no ``fab/__init__.py``, ``fab/<leaf>/py.typed`` present,
  nothing outside ``fab/<leaf>/`` and the dist-info, METADATA name and version as in pyproject.toml.
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import graphlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

# The layer of every fab distribution (DESIGN.md section 1). A new package must be added here.
LAYERS: dict[str, int] = {
    "fab-wrappers": 0,
    "fab-lazy": 0,
    "fab-core": 1,
    "fab-accelerators": 2,
    "fab-strategies": 2,
    "fab-precision": 2,
    "fab-loggers": 2,
}
PLUGIN_LAYER = 2
CORE = "fab-core"
NAMESPACE = "fab"
L2_MODULES: tuple[str, ...] = tuple(
    f"{NAMESPACE}.{name.removeprefix('fab-')}"
    for name, layer in LAYERS.items()
    if layer == PLUGIN_LAYER
)
# Operators that bound a version from above (``~=`` and ``==`` included).
UPPER_BOUND_OPERATORS = frozenset({"<", "<=", "==", "===", "~="})
IMPORT_FUNCTIONS = frozenset({"import_module", "__import__"})
NAMESPACE_INITS = (f"{NAMESPACE}/__init__.py", f"{NAMESPACE}/__init__.pyi")  # in a wheel


@dataclass(frozen=True)
class Package:
    """One ``packages/<dir>/`` distribution, as its pyproject.toml declares it."""

    name: str
    path: Path
    version: str | None
    dynamic: tuple[str, ...]
    dependencies: tuple[str, ...]
    extras: Mapping[str, tuple[str, ...]]
    #: ``[project.entry-points]``: group -> name -> target.
    entry_points: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def leaf(self) -> str:
        return self.name.removeprefix("fab-")

    @property
    def layer(self) -> int | None:
        return LAYERS.get(self.name)

    @property
    def src(self) -> Path:
        return self.path / "src"

    def requirement_sources(self) -> Iterator[tuple[str, str | None, str]]:
        """Yield ``(table, extra, requirement)`` for every declared requirement."""
        for req in self.dependencies:
            yield "[project.dependencies]", None, req
        for extra, reqs in sorted(self.extras.items()):
            for req in reqs:
                yield f"[project.optional-dependencies.{extra}]", extra, req


@dataclass
class CheckResult:
    """The outcome of one check: its name and the problems found (none means ok)."""

    name: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Repo:
    root: Path
    packages: tuple[Package, ...]

    def by_name(self) -> dict[str, Package]:
        return {p.name: p for p in self.packages}

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


# --- loading -----------------------------------------------------------------------------------


def _str_list(value: object, where: str, problems: list[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(str(v) for v in value)
    problems.append(f"{where} is not a list of strings")
    return ()


def _read_package(pyproject: Path, rel: str, problems: list[str]) -> Package | None:
    try:
        data: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        problems.append(f"{rel}: cannot be read: {exc}")
        return None
    project = data.get("project")
    if not isinstance(project, dict) or not isinstance(project.get("name"), str):
        problems.append(f"{rel}: no [project].name")
        return None
    version = project.get("version")
    extras_table = project.get("optional-dependencies", {})
    if not isinstance(extras_table, dict):
        problems.append(f"{rel}: [project.optional-dependencies] is not a table")
        extras_table = {}
    extras = {
        str(extra): _str_list(reqs, f"{rel}: [project.optional-dependencies.{extra}]", problems)
        for extra, reqs in extras_table.items()
    }
    entry_points_table = project.get("entry-points", {})
    entry_points = {
        str(group): {str(k): str(v) for k, v in table.items()}
        for group, table in entry_points_table.items()
        if isinstance(table, dict)
    }
    return Package(
        name=canonicalize_name(project["name"]),
        path=pyproject.parent,
        version=version if isinstance(version, str) else None,
        dynamic=_str_list(project.get("dynamic", []), f"{rel}: [project].dynamic", problems),
        dependencies=_str_list(
            project.get("dependencies", []), f"{rel}: [project.dependencies]", problems
        ),
        extras=extras,
        entry_points=entry_points,
    )


def load_repo(root: Path) -> tuple[Repo, CheckResult]:
    """Read every ``packages/*/pyproject.toml``; the result reports what could not be read."""
    result = CheckResult("pyproject")
    packages: list[Package] = []
    package_dirs = sorted(p for p in (root / "packages").glob("*") if p.is_dir())
    for directory in package_dirs:
        if directory.name.startswith((".", "_")):
            continue
        pyproject = directory / "pyproject.toml"
        rel = pyproject.relative_to(root).as_posix()
        if not pyproject.is_file():
            result.problems.append(f"{rel}: missing")
            continue
        package = _read_package(pyproject, rel, result.problems)
        if package is None:
            continue
        if package.name != directory.name:
            result.problems.append(f"{rel}: name {package.name!r} differs from its folder")
        if package.layer is None:
            result.problems.append(
                f"{rel}: {package.name!r} has no layer (add it to LAYERS in this script)"
            )
        packages.append(package)
    if not packages:
        result.problems.append(f"{root / 'packages'}: no package found")
    return Repo(root, tuple(packages)), result


# --- 1. namespace, 2. py.typed --------------------------------------------------------------------


def check_namespace(repo: Repo) -> CheckResult:
    result = CheckResult("namespace")
    for pkg in repo.packages:
        for bad in ("__init__.py", "__init__.pyi"):
            for path in (pkg.src / bad, pkg.src / NAMESPACE / bad):
                if path.exists():
                    result.problems.append(f"{repo.rel(path)} exists (it breaks the namespace)")
        namespace_dir = pkg.src / NAMESPACE
        if not namespace_dir.is_dir():
            result.problems.append(f"{repo.rel(namespace_dir)}: missing")
            continue
        for entry in sorted(namespace_dir.iterdir()):
            if entry.name not in {pkg.leaf, "__pycache__", "__init__.py", "__init__.pyi"}:
                result.problems.append(
                    f"{repo.rel(entry)}: {pkg.name} may ship only {NAMESPACE}/{pkg.leaf}/"
                )
    return result


def check_py_typed(repo: Repo) -> CheckResult:
    result = CheckResult("py.typed")
    for pkg in repo.packages:
        leaf_dir = pkg.src / NAMESPACE / pkg.leaf
        if not leaf_dir.is_dir():
            result.problems.append(f"{repo.rel(leaf_dir)}: missing leaf package directory")
        elif not (leaf_dir / "py.typed").is_file():
            result.problems.append(f"{repo.rel(leaf_dir / 'py.typed')}: missing")
    return result


# --- 3. requirements, 4. dependency graph ------------------------------------------------------


def _fab_requirements(
    pkg: Package, problems: list[str], where_prefix: str
) -> Iterator[tuple[str, str | None, Requirement]]:
    """Yield ``(where, extra, requirement)`` for every parseable fab-* requirement of ``pkg``."""
    for table, extra, text in pkg.requirement_sources():
        where = f"{where_prefix} {table}"
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            problems.append(f"{where}: invalid requirement {text!r}: {exc}")
            continue
        if canonicalize_name(req.name).startswith("fab-"):
            yield where, extra, req


def _requirement_problem(req: Requirement, target: Package | None) -> str | None:
    if target is None:
        return "names no package in packages/"
    if req.url:
        return "is a direct reference; use a version range"
    if not any(spec.operator in UPPER_BOUND_OPERATORS for spec in req.specifier):
        return "has no upper bound; use a compatible range like '>=0.1,<0.2'"
    version = _parse_version(target.version)  # None: reported by package-files
    if version is not None and not req.specifier.contains(version, prereleases=True):
        return f"excludes the in-repo version {target.version} of {target.name}"
    return None


def _parse_version(text: str | None) -> Version | None:
    try:
        return Version(text) if text is not None else None
    except InvalidVersion:
        return None


def check_requirements(repo: Repo) -> CheckResult:
    result = CheckResult("requirements")
    by_name = repo.by_name()
    for pkg in repo.packages:
        prefix = repo.rel(pkg.path / "pyproject.toml")
        for where, _extra, req in _fab_requirements(pkg, result.problems, prefix):
            problem = _requirement_problem(req, by_name.get(canonicalize_name(req.name)))
            if problem:
                result.problems.append(f"{where}: {str(req)!r} {problem}")
    return result


def _edge_problem(src: Package, dst: Package, extra: str | None) -> str | None:
    if src.layer is None or dst.layer is None or dst.layer < src.layer:
        return None
    if extra is not None and src.name == CORE and dst.layer == PLUGIN_LAYER:
        return None  # fab-core[<group>]: the one allowed upward edge
    how = f"through extra [{extra}]" if extra is not None else "as a hard dependency"
    return (
        f"{src.name} (L{src.layer}) -> {dst.name} (L{dst.layer}) {how}: dependencies "
        "point down only; upward edges are allowed only as fab-core extras"
    )


def _cycle_problem(graph: Mapping[str, set[str]]) -> str | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the node that depends on it; print "depends on" order.
        cycle: list[str] = list(reversed(exc.args[1]))
        return "cycle among hard dependencies: " + " -> ".join(cycle)
    return None


def check_dependency_graph(repo: Repo) -> CheckResult:
    result = CheckResult("dependency-graph")
    by_name = repo.by_name()
    graph: dict[str, set[str]] = {pkg.name: set() for pkg in repo.packages}
    ignored: list[str] = []  # parse errors are reported by the requirements check
    for pkg in repo.packages:
        prefix = repo.rel(pkg.path / "pyproject.toml")
        for where, extra, req in _fab_requirements(pkg, ignored, prefix):
            dst = by_name.get(canonicalize_name(req.name))
            if dst is None:
                continue
            if extra is None:
                graph[pkg.name].add(dst.name)
            problem = _edge_problem(pkg, dst, extra)
            if problem:
                result.problems.append(f"{where}: {problem}")
    cycle = _cycle_problem(graph)
    if cycle:
        result.problems.insert(0, cycle)
    return result


# --- 5. imports --------------------------------------------------------------------------------


def _module_package(path: Path, src: Path) -> list[str]:
    """The package a module's relative imports resolve against, as name parts."""
    return list(path.relative_to(src).parent.parts)


def _resolve(package: Sequence[str], level: int, module: str | None) -> str | None:
    if level == 0:
        return module
    if level - 1 >= len(package):
        return None  # beyond the top-level package
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def _dynamic_import_target(call: ast.Call, package: Sequence[str]) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        name = func.attr
    elif isinstance(func, ast.Name):
        name = func.id
    else:
        return None
    if name not in IMPORT_FUNCTIONS:
        return None
    arg = (
        call.args[0]
        if call.args
        else next((k.value for k in call.keywords if k.arg == "name"), None)
    )
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return None
    target = arg.value
    if not target.startswith("."):
        return target
    anchor = call.args[1] if len(call.args) > 1 else None
    anchor = anchor or next((k.value for k in call.keywords if k.arg == "package"), None)
    if isinstance(anchor, ast.Constant) and isinstance(anchor.value, str):
        package = anchor.value.split(".")
    stripped = target.lstrip(".")
    return _resolve(package, len(target) - len(stripped), stripped or None)


def imported_modules(tree: ast.AST, package: Sequence[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line, module)`` for every import in ``tree``, relative ones resolved.

    ``from fab import x`` yields ``fab.x`` (``fab`` is a namespace: its names are subpackages), and
    ``importlib.import_module("...")`` / ``__import__("...")`` with a string literal count too.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(package, node.level, node.module)
            if module == NAMESPACE:
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}" if alias.name != "*" else module
            elif module is not None:
                yield node.lineno, module
        elif isinstance(node, ast.Call):
            target = _dynamic_import_target(node, package)
            if target is not None:
                yield node.lineno, target


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _import_rule(pkg: Package) -> Callable[[str], str | None] | None:
    """The rule ``pkg``'s imports must follow: a function returning the problem, or None."""
    own = f"{NAMESPACE}.{pkg.leaf}"
    if pkg.layer == 0:

        def l0_rule(module: str) -> str | None:
            if _within(module, NAMESPACE) and not _within(module, own):
                return f"{pkg.name} (L0) imports {module!r}: L0 imports nothing of fab"
            return None

        return l0_rule
    if pkg.name == CORE:

        def core_rule(module: str) -> str | None:
            if any(_within(module, l2) for l2 in L2_MODULES):
                return f"fab-core imports the L2 package {module!r}: find it by entry point"
            return None

        return core_rule
    if pkg.layer == PLUGIN_LAYER:

        def l2_rule(module: str) -> str | None:
            other = next((l2 for l2 in L2_MODULES if _within(module, l2) and l2 != own), None)
            if other is not None:
                return (
                    f"{pkg.name} (L2) imports the L2 package {module!r}: L2 packages never "
                    "import each other"
                )
            return None

        return l2_rule
    return None


def check_imports(repo: Repo) -> CheckResult:
    result = CheckResult("imports")
    for pkg in repo.packages:
        rule = _import_rule(pkg)
        if rule is None or not pkg.src.is_dir():
            continue
        for path in sorted(pkg.src.rglob("*.py")):
            try:
                tree = ast.parse(path.read_bytes(), filename=str(path))
            except (SyntaxError, ValueError) as exc:
                result.problems.append(f"{repo.rel(path)}: cannot be parsed: {exc}")
                continue
            for line, module in imported_modules(tree, _module_package(path, pkg.src)):
                problem = rule(module)
                if problem:
                    result.problems.append(f"{repo.rel(path)}:{line}: {problem}")
    return result


def _fab_imports(repo: Repo, pkg: Package) -> Iterator[tuple[str, int, str]]:
    """``(file, line, fab leaf module)`` for every import of a fab package in ``pkg``'s source."""
    if not pkg.src.is_dir():
        return
    for path in sorted(pkg.src.rglob("*.py")):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError):
            continue  # reported by check_imports
        for line, module in imported_modules(tree, _module_package(path, pkg.src)):
            parts = module.split(".")
            if parts[0] == NAMESPACE and len(parts) > 1:
                yield repo.rel(path), line, f"{NAMESPACE}.{parts[1]}"


def check_declared_imports(repo: Repo) -> CheckResult:
    """Every fab package a package imports is one of its hard dependencies."""
    result = CheckResult("declared-imports")
    by_leaf = {f"{NAMESPACE}.{p.leaf}": p for p in repo.packages}
    for pkg in repo.packages:
        declared: set[str] = set()
        for req_text in pkg.dependencies:
            try:
                declared.add(canonicalize_name(Requirement(req_text).name))
            except InvalidRequirement:
                continue  # reported by check_requirements
        own = f"{NAMESPACE}.{pkg.leaf}"
        layer_rule = _import_rule(pkg)
        for where, line, leaf in _fab_imports(repo, pkg):
            target = by_leaf.get(leaf)
            if leaf == own or target is None or target.name in declared:
                continue
            if layer_rule is not None and layer_rule(leaf) is not None:
                continue  # a forbidden import: check_imports reports it

            result.problems.append(
                f"{where}:{line}: {pkg.name} imports {leaf!r} but does not declare "
                f"{target.name} in [project.dependencies]: installed alone it would fail"
            )
    return result


#: Where fab-core keeps the table of names each first-party plugin package provides.
PROVIDED_NAMES_FILE = "src/fab/core/registry/groups.py"
PROVIDED_NAMES_VARIABLE = "PROVIDED_NAMES"
ENTRY_POINT_GROUP_PREFIX = f"{NAMESPACE}."


def _provided_names_table(path: Path) -> object:
    """The literal value assigned to ``PROVIDED_NAMES`` in ``path``."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in tree.body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == PROVIDED_NAMES_VARIABLE:
            return ast.literal_eval(value)
    raise ValueError(f"no {PROVIDED_NAMES_VARIABLE} = {{...}} literal")


def check_known_providers(repo: Repo) -> CheckResult:
    """fab-core's table of provided names equals the plugin packages' entry points."""
    result = CheckResult("known-providers")
    registered = {
        pkg.name: {
            group: sorted(names)
            for group, names in pkg.entry_points.items()
            if group.startswith(ENTRY_POINT_GROUP_PREFIX) and names
        }
        for pkg in repo.packages
        if pkg.name != CORE
    }
    registered = {name: groups for name, groups in registered.items() if groups}
    core = repo.by_name().get(CORE)
    path = None if core is None else core.path / PROVIDED_NAMES_FILE
    if path is None or not path.is_file():
        if registered:
            result.problems.append(
                f"packages/{CORE}/{PROVIDED_NAMES_FILE}: missing; it must hold "
                f"{PROVIDED_NAMES_VARIABLE}, the names the plugin packages register"
            )
        return result
    where = repo.rel(path)
    try:
        table = _provided_names_table(path)
    except (SyntaxError, ValueError) as exc:
        result.problems.append(f"{where}: {PROVIDED_NAMES_VARIABLE} cannot be read: {exc}")
        return result
    if not isinstance(table, dict):
        result.problems.append(f"{where}: {PROVIDED_NAMES_VARIABLE} is not a dict")
        return result
    listed = {
        str(dist): {str(g): sorted(map(str, names)) for g, names in groups.items()}
        for dist, groups in table.items()
        if isinstance(groups, dict)
    }
    for dist in sorted(set(listed) | set(registered)):
        mine, theirs = listed.get(dist, {}), registered.get(dist, {})
        for group in sorted(set(mine) | set(theirs)):
            extra = sorted(set(mine.get(group, [])) - set(theirs.get(group, [])))
            missing = sorted(set(theirs.get(group, [])) - set(mine.get(group, [])))
            if extra:
                result.problems.append(
                    f"{where}: {PROVIDED_NAMES_VARIABLE} says {dist} provides {group} "
                    f"{', '.join(extra)}, but its pyproject.toml registers no such entry point"
                )
            if missing:
                result.problems.append(
                    f"{where}: {dist} registers {group} {', '.join(missing)} (its "
                    f"[project.entry-points]), missing from {PROVIDED_NAMES_VARIABLE}"
                )
    return result


# --- 6. package files --------------------------------------------------------------------------


def check_package_files(repo: Repo) -> CheckResult:
    result = CheckResult("package-files")
    for pkg in repo.packages:
        rel = repo.rel(pkg.path)
        for name in ("README.md", "CHANGELOG.md"):
            if not (pkg.path / name).is_file():
                result.problems.append(f"{rel}/{name}: missing")
        if not (pkg.path / "tests").is_dir():
            result.problems.append(f"{rel}/tests/: missing")
        if "version" in pkg.dynamic or pkg.version is None:
            result.problems.append(f"{rel}/pyproject.toml: [project].version must be static")
        elif _parse_version(pkg.version) is None:
            result.problems.append(f"{rel}/pyproject.toml: invalid version {pkg.version!r}")
    return result


# --- 7. wheels ---------------------------------------------------------------------------------


def _wheel_metadata(names: Sequence[str], wheel: zipfile.ZipFile) -> tuple[str, str] | None:
    metadata = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    if len(metadata) != 1:
        return None
    message = email.parser.Parser().parsestr(wheel.read(metadata[0]).decode("utf-8"))
    return str(message.get("Name", "")), str(message.get("Version", ""))


def _check_wheel_contents(
    names: Sequence[str], pkg: Package, metadata: tuple[str, str] | None
) -> list[str]:
    leaf_prefix = f"{NAMESPACE}/{pkg.leaf}/"
    problems = [f"contains {bad}" for bad in NAMESPACE_INITS if bad in names]
    if f"{leaf_prefix}py.typed" not in names:
        problems.append(f"has no {leaf_prefix}py.typed")
    strays = [n for n in names if not _expected_wheel_entry(n, leaf_prefix)]
    if strays:
        problems.append(f"ships files outside {leaf_prefix}: {', '.join(sorted(strays)[:5])}")
    if metadata is None:
        problems.append("has no single *.dist-info/METADATA")
        return problems
    name, version = metadata
    if canonicalize_name(name) != pkg.name:
        problems.append(f"METADATA Name {name!r} is not {pkg.name!r}")
    if pkg.version is not None and not _same_version(version, pkg.version):
        problems.append(f"METADATA Version {version!r} differs from pyproject.toml {pkg.version!r}")
    return problems


def _expected_wheel_entry(name: str, leaf_prefix: str) -> bool:
    top = name.split("/", 1)[0]
    return (
        name.startswith(leaf_prefix)
        or name.endswith("/")  # directory entries
        or top.endswith((".dist-info", ".data"))
        or name in NAMESPACE_INITS  # reported on their own
    )


def _same_version(a: str, b: str) -> bool:
    va, vb = _parse_version(a), _parse_version(b)
    return va == vb if va is not None and vb is not None else a == b


def check_wheels(repo: Repo, wheel_dir: Path, name: str = "wheels") -> CheckResult:
    result = CheckResult(name)
    by_name = repo.by_name()
    seen: set[str] = set()
    if not wheel_dir.is_dir():
        result.problems.append(f"{wheel_dir}: not a directory")
        return result
    for wheel_path in sorted(wheel_dir.glob("*.whl")):
        dist = canonicalize_name(wheel_path.name.split("-", 1)[0])
        pkg = by_name.get(dist)
        if pkg is None:
            result.problems.append(f"{wheel_path.name}: no package {dist!r} in packages/")
            continue
        seen.add(dist)
        try:
            with zipfile.ZipFile(wheel_path) as wheel:
                names = wheel.namelist()
                problems = _check_wheel_contents(names, pkg, _wheel_metadata(names, wheel))
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
            problems = [f"cannot be read: {exc}"]
        result.problems.extend(f"{wheel_path.name}: {p}" for p in problems)
    for pkg in repo.packages:
        if pkg.name not in seen:
            result.problems.append(f"{wheel_dir}: no wheel of {pkg.name}")
    return result


def build_wheels(repo: Repo, out_dir: Path) -> CheckResult:
    """Build every package's wheel into ``out_dir`` with pip (offline when hatchling is here)."""
    result = CheckResult("build")
    offline = importlib.util.find_spec("hatchling") is not None
    flags = ["--no-build-isolation", "--no-index"] if offline else []
    for pkg in repo.packages:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *flags]
        proc = subprocess.run(
            [*cmd, "-w", str(out_dir), str(pkg.path)], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            reason = _build_error(proc.stderr + proc.stdout)
            result.problems.append(f"{repo.rel(pkg.path)}: wheel build failed: {reason}")
    return result


def _build_error(output: str) -> str:
    """The line of a failed build's output that says why: the last exception, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b.*:", line)]
    return (errors or lines or ["no output"])[-1]


# --- running -----------------------------------------------------------------------------------

SOURCE_CHECKS: tuple[Callable[[Repo], CheckResult], ...] = (
    check_namespace,
    check_py_typed,
    check_requirements,
    check_dependency_graph,
    check_imports,
    check_declared_imports,
    check_known_providers,
    check_package_files,
)


def run_checks(root: Path, *, wheels: Path | None = None, build: bool = False) -> list[CheckResult]:
    repo, loaded = load_repo(root)
    results = [loaded, *(check(repo) for check in SOURCE_CHECKS)]
    if wheels is not None:
        results.append(check_wheels(repo, wheels))
    if build:
        with tempfile.TemporaryDirectory(prefix="fab-wheels-") as tmp:
            results.append(build_wheels(repo, Path(tmp)))
            results.append(check_wheels(repo, Path(tmp), name="wheels (built)"))
    return results


def report(results: Sequence[CheckResult]) -> int:
    for result in results:
        if result.ok:
            print(f"ok   {result.name}")
        for problem in result.problems:
            print(f"FAIL {result.name}: {problem}")
    return 0 if all(r.ok for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root"
    )
    parser.add_argument("--wheels", type=Path, metavar="DIR", help="check the wheels in DIR")
    parser.add_argument("--build", action="store_true", help="build every wheel and check them")
    args = parser.parse_args(argv)
    return report(run_checks(args.root.resolve(), wheels=args.wheels, build=args.build))


if __name__ == "__main__":
    sys.exit(main())
