"""The layers of docs/architecture.md, checked: which package may import which, and no cycles.

Every import counts, type-only ones under ``TYPE_CHECKING`` and the lazy
ones inside functions included: a cycle that only the type checker sees is
still a cycle a reader has to untangle.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import lpfs

ROOT = Path(lpfs.__file__).parent

# The packages each layer may import, besides itself. ``errors`` is at the
# bottom: everything may import it. The modules at the top (``__main__`` and
# the old public names ``shims``, ``nsfs``, ``pytest_plugin``) may import anything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "kernel": {"errors"},
    "formats": {"kernel", "errors"},
    "sysfs": {"kernel", "errors"},
    "fuse": {"errors"},
    "control": {"errors"},
    "daemon": {"kernel", "formats", "sysfs", "fuse", "control", "errors"},
    "tools": {"daemon", "kernel", "formats", "fuse", "control", "errors"},
    "testing": {"fuse", "control", "errors"},
}
TOP = {"", "__main__", "shims", "nsfs", "pytest_plugin"}


def module_name(path: Path) -> str:
    parts = ["lpfs", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported(name: str, path: Path) -> Iterator[str]:
    """The lpfs modules ``name`` imports, wherever in the file the import is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from lpfs.kernel import core`` imports the module lpfs.kernel.core.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t in MODULES and t != "lpfs")


GRAPH: dict[str, set[str]] = {name: set(imported(name, path)) for name, path in MODULES.items()}


def layer(name: str) -> str:
    """The package under lpfs that holds ``name`` ("" for lpfs itself)."""
    return name.partition(".")[2].partition(".")[0]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n) not in TOP))
def test_imports_point_down(name: str) -> None:
    own = layer(name)
    assert own in ALLOWED, f"{name} is in no layer of ALLOWED"
    wrong = sorted(t for t in GRAPH[name] if layer(t) != own and layer(t) not in ALLOWED[own])
    assert [] == wrong, f"{name} ({own}) may import only {sorted(ALLOWED[own])}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# The session hands itself to its invalidator, which names its type: the
# last cycle, type-only, to be cut by a protocol of what the invalidator reads.
KNOWN_CYCLES = [["lpfs.fuse.invalidation", "lpfs.fuse.session"]]


def test_no_import_cycle() -> None:
    assert KNOWN_CYCLES == cycles(GRAPH)


def test_the_cycle_finder_finds_one() -> None:
    assert [["a", "b", "c"]] == cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})


def test_every_import_is_seen() -> None:
    """Lazy and type-only imports count: the CLI's daemon import is inside a function."""
    assert "lpfs.daemon.daemon" in GRAPH["lpfs.tools.cli"]
    assert "lpfs.kernel.core" in GRAPH["lpfs.sysfs.tree"]
