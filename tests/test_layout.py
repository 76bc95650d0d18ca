"""The import graph: no circles, and the core library depends on nothing above it."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("reconfusion", "reconfusion_benchmark", "train_prior", "data_tools", "nerfstudio_plugin")
FRONT_DOOR = "reconfusion.cli"
ABOVE_THE_CORE = ("reconfusion_benchmark", "data_tools", "nerfstudio", "nerfstudio_plugin", "train_prior")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports in functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_core_imports_nothing_above_it():
    for path in (REPO / "reconfusion").rglob("*.py"):
        name = module_name(path)
        if name == FRONT_DOOR:
            continue
        above = sorted(m for m in imports_of(path) if m.split(".")[0] in ABOVE_THE_CORE)
        assert not above, f"{name} imports {above}"


def test_the_import_graph_has_no_circles():
    graph = project_graph()
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                cycle = trail[trail.index(child):] + [child] if child in trail else [node, child]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if child not in state:
                visit(child, trail + [child])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
