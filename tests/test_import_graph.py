"""The apps are a one-way stack: each may import the ones below it, never one above,
at module level or inside a function; the engine imports no app and no Django.
Read from the source with `ast`, so a late import cannot hide a cycle."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("engine", "projects", "endpoints", "experiments", "runs", "webhooks", "promptlooper_site")
FRAMEWORKS = ("django", "rest_framework", "channels", "drf_spectacular", "django_rq", "rq")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, as a path: "runs/events.py"
    line: int
    target: str  # what it imports: "webhooks.tasks"

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def imports_in(path: Path, root: Path) -> list[Import]:
    """Every absolute import in a file, at any depth (functions, classes, ifs)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = str(path.relative_to(root))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(name, node.lineno, node.module))
    return found  # relative imports stay inside their own package


def app_imports(root: Path = ROOT) -> dict[str, list[Import]]:
    """Each layer's imports of other layers and of the frameworks."""
    graph: dict[str, list[Import]] = {}
    for app in LAYERS:
        graph[app] = [
            found
            for path in sorted((root / app).rglob("*.py"))
            for found in imports_in(path, root)
            if top(found.target) != app and top(found.target) in (*LAYERS, *FRAMEWORKS)
        ]
    return graph


def top(target: str) -> str:
    return target.split(".", 1)[0]


def upward_imports(graph: dict[str, list[Import]]) -> list[str]:
    rank = {app: n for n, app in enumerate(LAYERS)}
    problems = []
    for app, found in graph.items():
        for imp in found:
            target = top(imp.target)
            if target in rank and rank[target] > rank[app]:
                problems.append(f"{imp}: {app} sits below {target} and may not import it")
            elif app == "engine" and target in (*LAYERS, *FRAMEWORKS):
                problems.append(f"{imp}: the engine imports no app and no framework")
    return problems


def find_cycle(graph: dict[str, list[Import]]) -> list[str] | None:
    """A cycle between apps as ["a", "b", ..., "a"], or None."""
    edges = {
        app: sorted({top(i.target) for i in found if top(i.target) in graph}) for app, found in graph.items()
    }
    state: dict[str, str] = {}  # app -> "open" (on the path) or "done"

    def visit(app: str, path: list[str]) -> list[str] | None:
        state[app] = "open"
        for target in edges.get(app, ()):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target, [*path, target])):
                return cycle
        state[app] = "done"
        return None

    for app in edges:
        if app not in state and (cycle := visit(app, [app])):
            return cycle
    return None


def check(graph: dict[str, list[Import]]) -> list[str]:
    problems = upward_imports(graph)
    cycle = find_cycle(graph)
    if cycle:
        steps = zip(cycle, cycle[1:], strict=False)
        how = "; ".join(str(next(i for i in graph[app] if top(i.target) == to)) for app, to in steps)
        problems.append(f"import cycle {' -> '.join(cycle)} ({how})")
    return problems


def test_no_app_imports_an_app_above_it_and_there_is_no_cycle():
    problems = check(app_imports())
    assert not problems, (
        "The apps must form a one-way stack " + " < ".join(LAYERS) + ":\n" + "\n".join(problems)
    )


def test_the_check_finds_every_import_even_inside_a_function(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "events.py").write_text("import os\n\n\ndef dispatch():\n    from webhooks.tasks import send\n")
    found = {app: imports for app, imports in app_imports(tmp_path).items() if imports}
    assert [str(i) for i in found["runs"]] == ["runs/events.py:5 imports webhooks.tasks"]
    (message,) = check(found)
    assert (
        message == "runs/events.py:5 imports webhooks.tasks: runs sits below webhooks and may not import it"
    )


def test_the_check_names_a_cycle_and_where_it_closes():
    graph = {
        "experiments": [Import("experiments/report.py", 30, "runs.models")],
        "runs": [Import("runs/sweeps.py", 25, "experiments.models")],
    }
    assert find_cycle(graph) == ["experiments", "runs", "experiments"]
    assert (
        "import cycle experiments -> runs -> experiments (experiments/report.py:30 imports runs.models; "
        "runs/sweeps.py:25 imports experiments.models)"
    ) in check(graph)


def test_the_engine_may_not_import_django():
    graph = {"engine": [Import("engine/cache.py", 3, "django.db")]}
    assert check(graph) == ["engine/cache.py:3 imports django.db: the engine imports no app and no framework"]
