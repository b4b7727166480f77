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
THIRD_PARTY_IN_DOMAIN = {"pydantic", "pydantic_core", "eventsourcing"}


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
