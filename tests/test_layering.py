"""The package's layers (ARCHITECTURE.md): every import goes down, and no two modules import each other.

ARCHITECTURE.md: "Layers, bottom up: envs -> data, safety -> policies, teleop -> export -> runtime -> monitor,
rl, deploy -> evaluation, ros2_ws -> pipeline, bench -> cli."

Pure ``ast``: nothing in ``robot_rl`` is imported. Every import counts, the ones inside functions too (the
package imports torch-heavy modules lazily that way), and so does ``TYPE_CHECKING``: a type-only import
upwards still ties a lower layer to a higher one's names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "robot_rl"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Bottom up, as ARCHITECTURE.md lists them; modules on one rank may import each other's modules (no cycles).
LAYERS: dict[str, int] = {
    "envs": 0,
    "data": 1,
    "safety": 1,
    "policies": 2,
    "teleop": 2,
    "export": 3,
    "runtime": 4,
    "monitor": 5,
    "rl": 5,
    # robot_rl/deploy/: open_policy and build_stack. On the rank of monitor and rl, which use it (the monitor's
    # rollouts run the deployed stack, residual training opens its base) and which it uses (a calibrated failure
    # monitor, a residual run's agent): modules on one rank may import each other's, never in a cycle.
    "deploy": 5,
    "evaluation": 6,
    "pipeline": 7,  # robot_rl/pipeline.py; bench/ (outside the package) sits on this rank too
    "sweep": 7,  # robot_rl/sweep/: runs training commands (as the CLI's child processes) and sums them up
    "cli": 8,
}
# Plain utilities under every layer: they import nothing from robot_rl but each other.
UTILITIES = {"provenance", "limits", "parallel"}
# ``robot_rl/__init__.py`` only registers the environments (``import robot_rl`` does that), so it is envs.
PACKAGE_INIT_LAYER = "envs"
BOTTOM = -1


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer_of(module: str) -> tuple[str, int]:
    """The layer name and rank of a ``robot_rl`` module."""
    parts = module.split(".")
    if len(parts) == 1:
        return PACKAGE_INIT_LAYER, LAYERS[PACKAGE_INIT_LAYER]
    top = parts[1]
    if top in UTILITIES:
        return "utility", BOTTOM
    if top not in LAYERS:
        valid = sorted([*LAYERS, *UTILITIES])
        raise AssertionError(
            f"{module}: `robot_rl.{top}` has no layer in tests/test_layering.py. Valid layers: {valid}. "
            "Add it to LAYERS (or UTILITIES) following ARCHITECTURE.md."
        )
    return top, LAYERS[top]


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The most specific ``robot_rl`` module that an imported dotted name refers to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, source: str, is_package: bool, modules: Iterable[str]) -> dict[str, int]:
    """The robot_rl modules ``module`` imports (anywhere in its source), each with its first line."""
    tree = ast.parse(source)
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return
        target = _resolve(name, modules)
        if target is not None and target != module:
            found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from robot_rl.export import card`` imports the module ``card``, not the package facade.
                candidate = f"{source}.{alias.name}"
                add(candidate if candidate in modules else source, node.lineno)
    return found


def _graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    modules = _modules()
    return modules, {m: _imports(m, p.read_text(), p.name == "__init__.py", modules) for m, p in modules.items()}


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a path that ends where it starts."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in graph[node]:
            if nxt == start:
                return [*paths[node], start]
            if nxt in component and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


class TestLayering:
    def test_every_module_has_a_layer(self) -> None:
        for module in _modules():
            _layer_of(module)

    def test_every_import_goes_down(self) -> None:
        modules, graph = _graph()
        violations = []
        for importer, targets in sorted(graph.items()):
            layer, rank = _layer_of(importer)
            for imported, line in sorted(targets.items()):
                other, other_rank = _layer_of(imported)
                if other_rank > rank or (rank == BOTTOM and other != "utility"):
                    where = f"{modules[importer].relative_to(ROOT.parent)}:{line}"
                    violations.append(f"{where}: {importer} ({layer}) imports {imported} ({other})")
        assert not violations, "imports from a lower layer to a higher one:\n" + "\n".join(violations)

    def test_no_import_cycles(self) -> None:
        _, graph = _graph()
        cycles = _cycles(graph)
        assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)

    def test_the_checker_sees_lazy_relative_and_from_imports(self) -> None:
        modules = {"robot_rl", "robot_rl.export", "robot_rl.export.card", "robot_rl.export.metadata", "robot_rl.rl.x"}
        source = (
            "import numpy\n"
            "from robot_rl.export import card\n"  # the submodule, not the package facade
            "from .metadata import dumps\n"
            "def f():\n"
            "    if True:\n"
            "        from robot_rl.rl.x import y  # lazy: an edge like any other\n"
        )
        found = _imports("robot_rl.export.onnx_export", source, False, modules)
        assert found == {"robot_rl.export.card": 2, "robot_rl.export.metadata": 3, "robot_rl.rl.x": 6}

    def test_the_checker_reports_a_cycle_as_a_closed_path(self) -> None:
        graph = {
            "robot_rl.a": {"robot_rl.b": 1},
            "robot_rl.b": {"robot_rl.c": 1},
            "robot_rl.c": {"robot_rl.a": 1, "robot_rl.d": 1},
            "robot_rl.d": {},
        }
        assert _cycles(graph) == [["robot_rl.a", "robot_rl.b", "robot_rl.c", "robot_rl.a"]]
