"""The architecture's import rules, written as tests (DESIGN.md "Layout", daemon/__init__.py).

The module graph is built from the source's AST, imports inside functions included, so a cycle
held together by a function-level import is found as well as one at module level.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("rlr", "daemon")
FORBIDDEN_IN_RLR = ("redis", "click", "structlog", "daemon", "pydantic_settings")
# daemon/*.py: settings, errors, logs, supervisor; they import no part
TOP_LEVEL = {"daemon", *(f"daemon.{p.stem}" for p in (ROOT / "daemon").glob("*.py")
                         if p.stem != "__init__")}
# part -> the parts it may import (besides itself, `rlr` and the top-level modules)
ALLOWED_PARTS = {
    "wire": set(),
    "models": {"wire"},
    "serve": {"wire", "models", "recipes"},
    "jobs": {"wire", "models"},
    "line": {"wire", "recipes"},
    "cli": {"wire", "models", "serve", "jobs", "line", "console", "records", "recipes"},
    "console": {"wire", "models", "jobs", "recipes"},
    "records": {"wire"},
    "recipes": {"wire", "models"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (relative imports resolved); for
    `from pkg import name`, both `pkg` and `pkg.name` (the latter counts only if a module)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    files = {module_name(p): p for p in source_files()}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = {m for m in imported_names(path) if m in files and m != name}
        graph[name] = targets
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def part_of(module: str) -> str | None:
    """`daemon.serve.worker` -> "serve"; top-level daemon modules and rlr -> None."""
    bits = module.split(".")
    if bits[0] != "daemon" or module in TOP_LEVEL or len(bits) < 2:
        return None
    return bits[1]


# ----------------------------------------------------------------------------- the checker


def test_the_cycle_finder_finds_a_planted_cycle_and_no_false_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]
    # diamond: two paths to one module are not a cycle
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("def f():\n    from daemon.serve import worker\n"
                                "from . import sibling\nfrom .sub import thing\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        names = imported_names(pkg / "mod.py")
    finally:
        ROOT = saved
    assert {"daemon.serve", "daemon.serve.worker", "pkg", "pkg.sibling", "pkg.sub"} <= names


# ----------------------------------------------------------------------------- the rules


def test_no_import_cycle_anywhere_in_rlr_or_daemon():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_parts_import_only_the_parts_they_build_on():
    problems = []
    for module, targets in module_graph().items():
        part = part_of(module)
        if module in TOP_LEVEL - {"daemon"}:
            bad = sorted(t for t in targets if part_of(t) is not None)
            problems += [f"{module} (top level) imports {t}" for t in bad]
            continue
        if part is None:
            continue
        assert part in ALLOWED_PARTS, f"daemon/{part}/ is a part this test does not know yet"
        for t in targets:
            other = part_of(t)
            if other is not None and other != part and other not in ALLOWED_PARTS[part]:
                problems.append(f"{module} ({part}) imports {t} ({other})")
    assert not problems, "\n".join(problems)


def test_only_cli_imports_click():
    offenders = [module_name(p) for p in source_files()
                 if any(n.split(".")[0] == "click" for n in imported_names(p))
                 and part_of(module_name(p)) != "cli"]
    assert offenders == []


def test_the_worker_loop_talks_to_redis_only_through_its_ports():
    names = imported_names(ROOT / "daemon" / "serve" / "worker.py")
    assert not {n for n in names if n.split(".")[0] == "redis"}
    assert "daemon.wire.clients" not in names  # TRANSIENT lives there: ports translate it
    source = (ROOT / "daemon" / "serve" / "worker.py").read_text()
    assert "TRANSIENT" not in source and "redis.exceptions" not in source


def test_a_rule_imports_the_rules_base_never_another_rule_nor_the_publisher():
    rules = ROOT / "daemon" / "serve" / "rules"
    shared = {"daemon.serve.rules", "daemon.serve.rules.base", "daemon.serve.rules.window",
              "daemon.serve.rules.registry"}
    plugins = {module_name(p) for p in rules.glob("*.py")} - shared
    forbidden = {"daemon.serve.publish", "daemon.serve.worker", "daemon.serve.redis_io",
                 "daemon.serve.memory_io"}
    problems, graph = [], module_graph()
    for path in rules.glob("*.py"):
        me = module_name(path)
        bad = graph[me] & (forbidden | (plugins - {me} if me in plugins else set()))
        problems += [f"{me} imports {t}" for t in sorted(bad)]
    assert problems == []


def test_no_daemon_file_is_over_about_400_lines():
    long = {module_name(p): n for p in (ROOT / "daemon").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert long == {}


@pytest.mark.parametrize("path", sorted((ROOT / "rlr").rglob("*.py")), ids=lambda p: p.name)
def test_no_rlr_source_file_imports_the_daemon_stack(path):
    bad = sorted(n for n in imported_names(path) if n.split(".")[0] in FORBIDDEN_IN_RLR)
    assert bad == [], f"{path.name} imports {bad}"


def test_importing_every_rlr_module_loads_no_daemon_dependency():
    modules = sorted(module_name(p) for p in (ROOT / "rlr").rglob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_RLR!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def plugin_folders() -> list[Path]:
    """Folders of plug-ins: a package with a `base.py` (rlr/engines/, daemon/line/bridges/...)."""
    return sorted(p.parent for pkg in PACKAGES for p in (ROOT / pkg).rglob("base.py")
                  if (p.parent / "__init__.py").exists())


# the module-level name a registry reads from each plug-in of its folder
PLUGIN_MARKERS = {"ENGINE", "BRIDGE", "SOURCE", "RULE"}


def is_plugin(path: Path) -> bool:
    """A plug-in declares what it registers at module level (`ENGINE = EngineKind(...)`,
    `BRIDGE = BridgeSpec(...)`, ...); every other module of a plug-in folder is shared."""
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(node, (ast.Assign, ast.AnnAssign))
               and any(isinstance(t, ast.Name) and t.id in PLUGIN_MARKERS
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
               for node in tree.body)


def plugin_rule_breaks(folder: Path, graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A plug-in imports its base and the folder's shared modules, never another plug-in; a
    shared module imports no plug-in."""
    package = module_name(folder / "__init__.py")
    plugins = {f"{package}.{p.stem}" for p in folder.glob("*.py") if is_plugin(p)}
    siblings = {f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    return [f"{m} imports {t}, another plug-in" if m in plugins
            else f"{m} (shared) imports the plug-in {t}"
            for m in sorted(siblings) for t in sorted(graph.get(m, ()))
            if t in plugins - {m}]


def test_the_plugin_rule_finds_a_plugin_importing_another(tmp_path):
    folder = tmp_path / "pkg" / "plugins"
    folder.mkdir(parents=True)
    for name in ("__init__", "base", "shared"):
        (folder / f"{name}.py").write_text("")
    for name in ("a", "b"):
        (folder / f"{name}.py").write_text("ENGINE = object()\n")
    graph = {"pkg.plugins.base": {"pkg.plugins.shared"}, "pkg.plugins.shared": set(),
             "pkg.plugins.a": {"pkg.plugins.base", "pkg.plugins.shared"},
             "pkg.plugins.b": {"pkg.plugins.base", "pkg.plugins.a"}}
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert plugin_rule_breaks(folder, graph) == [
            "pkg.plugins.b imports pkg.plugins.a, another plug-in"]
        graph["pkg.plugins.shared"] = {"pkg.plugins.b"}
        assert "pkg.plugins.shared (shared) imports the plug-in pkg.plugins.b" in (
            plugin_rule_breaks(folder, graph))
    finally:
        ROOT = saved


def test_a_plugin_imports_its_base_never_another_plugin():
    folders = plugin_folders()
    assert ROOT / "rlr" / "engines" in folders
    graph = module_graph()
    problems = [p for folder in folders for p in plugin_rule_breaks(folder, graph)]
    assert not problems, "\n".join(problems)


def test_every_part_says_what_it_does_and_may_import():
    for part in (ROOT / "daemon").iterdir():
        if part.is_dir() and (part / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((part / "__init__.py").read_text())) or ""
            assert "May import" in doc, f"daemon/{part.name}/__init__.py lacks its import rule"


# ----------------------------------------------------------------------------- bridges

BRIDGES = ROOT / "daemon" / "line" / "bridges"


def test_a_bridge_imports_its_base_never_another_bridge():
    plugins = {f"daemon.line.bridges.{p.stem}" for p in BRIDGES.glob("*.py") if is_plugin(p)}
    assert {"daemon.line.bridges.mqtt", "daemon.line.bridges.modbus"} <= plugins
    problems = []
    for path in sorted(BRIDGES.glob("*.py")):
        me = module_name(path)
        for target in sorted(imported_names(path) & plugins - {me}):
            kind = "bridge" if me in plugins else "shared module"
            problems.append(f"{me} ({kind}) imports the bridge {target}")
    others = [module_name(p) for p in source_files()
              if not p.is_relative_to(BRIDGES) and module_name(p).split(".")[1:2] != ["cli"]
              and imported_names(p) & plugins]
    problems += [f"{m} imports a bridge: only daemon.cli and the registry may" for m in others]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- sources


def test_a_producer_source_imports_its_base_never_another_source():
    package = "daemon.line.sources"
    shared = {package, f"{package}.base"}
    problems = [f"{module} imports {t}" for module, targets in module_graph().items()
                if module.startswith(f"{package}.") and module not in shared
                for t in targets if t.startswith(f"{package}.") and t not in shared]
    base_imports = module_graph()[f"{package}.base"]
    problems += [f"{package}.base imports {t}" for t in base_imports
                 if t.startswith(f"{package}.")]
    assert not problems, "\n".join(problems)
