"""The shape of the code: `components/` (the library) never reaches up into `pipeline/` (the app),
and no project modules import each other in a circle.

Read from the source with `ast`, so nothing is imported: an import inside a function counts as
much as one at the top of a module, since both tie the two modules together.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "pipeline")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement anywhere in the tree names (`from x import y` also
    names x.y, which is a module when y is one)."""
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def project_imports() -> dict[str, set[str]]:
    """module -> the project modules it imports (a name that is a package counts as its __init__)."""
    modules = project_modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = imported_names(tree, module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in modules and name != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, lowlink, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = lowlink[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                lowlink[node] = min(lowlink[node], lowlink[successor])
            elif successor in on_stack:
                lowlink[node] = min(lowlink[node], index[successor])
        if lowlink[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_project():
    graph = project_imports()
    assert {"components.errors", "components.workers", "pipeline.cli", "pipeline.steps"} <= set(graph)
    assert "components.errors" in graph["pipeline.cli"]  # module-level import
    assert "components.evaluate" in graph["pipeline.cli"]  # import inside a function


def test_components_never_import_pipeline():
    upward = sorted(f"{module} imports {name}" for module, names in project_imports().items()
                    if module.startswith("components") for name in names if name.startswith("pipeline"))
    assert upward == []


def test_components_never_start_pipeline_as_a_process():
    starting = []
    for module, path in project_modules().items():
        if not module.startswith("components"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value.startswith("pipeline.") or "-m pipeline" in node.value):
                starting.append(f"{module}:{node.lineno} {node.value!r}")
    assert starting == []


def test_no_import_cycles():
    assert cycles(project_imports()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_cycles_are_found(graph, expected):
    assert cycles(graph) == expected
