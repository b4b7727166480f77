"""Dependencies point inwards (DESIGN §2): checked on the source, not by convention."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "commands", "projections", "adapters", "agent", "bridge", "infra"}
ALLOWED = {
    "domain": set(),
    "commands": {"domain"},
    "projections": {"domain"},
    "adapters": {"domain", "commands", "projections"},
    "agent": {"adapters", "commands", "domain"},
    "bridge": {"adapters", "domain"},
}  # infra may import everything; nothing may import tests or bench
# the settings models are the one piece of infra the outer layers may name: they are handed a
# Settings (built by infra/bootstrap), never build the graph themselves
SETTINGS = "infra.settings"
INNER = {"domain", "commands", "projections"}
THIRD_PARTY_IN_DOMAIN = {"pydantic", "pydantic_core", "eventsourcing", "phonenumbers"}  # pure


def imports(package: str):
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_inside_it(package):
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in imports(package)
        if name.split(".")[0] in OURS
        and name.split(".")[0] != package
        and name.split(".")[0] not in ALLOWED[package]
        and not (package not in INNER and name == SETTINGS)
    ]
    assert wrong == []


def test_domain_is_pure():
    import sys

    stdlib = sys.stdlib_module_names
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path, name in imports("domain")
        if name.split(".")[0] not in stdlib | THIRD_PARTY_IN_DOMAIN | {"domain"}
        or name.startswith("eventsourcing.")
        and name != "eventsourcing.domain"
    ]
    assert wrong == []


def module_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports (anywhere in it, even inside a
    function). ``from package import submodule`` is an edge to the submodule."""
    modules: dict[str, Path] = {}
    for package in sorted(OURS):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in modules
                    else node.module
                    for alias in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    assert cycles(module_graph()) == []
