"""The one-way data flow, checked on the source: stages never import each other, the import
graph has no circle and no upward edge, desks stay below the web and the runtime, tools stay
out of the runtime, and files and functions stay within a reader's span."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["capture", "quality", "inference", "outcome", "dicom", "outbox"]
BUILT = [stage for stage in STAGES if (ROOT / "appliance" / stage).is_dir()]


# Layers, lowest first: a module may import its own layer and those below, never above.
LAYERS = [
    ("appliance", "appliance.errors", "appliance.domain", "appliance.config",
     "appliance.destinations", "appliance.visits", "appliance.loops", "appliance.metrics",
     "appliance.tls"),  # foundations
    ("appliance.store", "appliance.audit"),
    ("appliance.capture", "appliance.quality", "appliance.inference", "appliance.outcome",
     "appliance.dicom", "appliance.outbox", "appliance.synth", "appliance.validate"),  # stages
    ("appliance.pipeline",),
    ("appliance.desks",),
    ("appliance.runtime", "appliance.tools", "web"),
    ("appliance.cli",),
]  # fmt: skip
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
SIZE_EXEMPT: tuple[str, ...] = ()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("stage", BUILT)
def test_stages_do_not_import_each_other(stage: str) -> None:
    folder = ROOT / "appliance" / stage
    others = [f"appliance.{other}" for other in STAGES if other != stage]
    for path in _files(folder):
        for name in _imports(path):
            assert not any(name == o or name.startswith(o + ".") for o in others), (
                f"{path.relative_to(ROOT)} imports {name}: only appliance/pipeline.py wires stages"
            )


def test_domain_imports_nothing_from_the_appliance() -> None:
    assert not [n for n in _imports(ROOT / "appliance" / "domain.py") if n.startswith("appliance")]


def test_web_never_touches_pydicom_or_onnxruntime() -> None:
    for path in _files(ROOT / "web"):
        for name in _imports(path):
            root = name.split(".")[0]
            assert root not in {"pydicom", "pynetdicom", "onnxruntime", "highdicom"}, path


def test_quality_is_pure() -> None:
    banned = {"os", "pathlib", "socket", "sqlite3", "subprocess", "pydicom", "appliance.store"}
    for path in _files(ROOT / "appliance" / "quality"):
        assert not (_imports(path) & banned), path


def test_architecture_md_names_every_module() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for folder in ("appliance", "web"):
        for path in _files(ROOT / folder):
            if path.name == "__init__.py":
                continue
            relative = path.relative_to(ROOT).as_posix()
            assert f"`{relative}`" in text, f"ARCHITECTURE.md does not describe {relative}"


# -- the import graph ---------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    found = {}
    for folder in ("appliance", "web"):
        for path in _files(ROOT / folder):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _graph() -> dict[str, set[str]]:
    """module → the appliance/web modules it imports (``from pkg import mod`` names ``mod``;
    imports under TYPE_CHECKING and inside functions count too)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        wanted: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    wanted.add(full if full in modules else base)
        edges = set()
        for target in wanted:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _layer(module: str) -> int:
    best: tuple[int, str] | None = None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (index, name)
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py"
    return best[0]


def test_the_import_graph_has_no_circle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, f"modules that import each other: {circles}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]
    assert not upward, "upward imports: " + ", ".join(upward)


def test_desks_never_import_web_or_runtime() -> None:
    for module, targets in _graph().items():
        if module.startswith("appliance.desks"):
            bad = [t for t in targets if t.startswith(("web", "appliance.runtime"))]
            assert not bad, (
                f"{module} imports {bad}: desks are reached from the web, not the reverse"
            )


def test_tools_are_never_imported_by_the_runtime() -> None:
    for module, targets in _graph().items():
        if module.startswith(("appliance.tools", "appliance.cli")):
            continue  # the tools themselves, and `appliance bench` which runs them
        bad = [t for t in targets if t.startswith("appliance.tools")]
        assert not bad, f"{module} imports {bad}: tools are apart from what `serve` runs"


# -- sizes --------------------------------------------------------------------------------------
def _sized_files() -> list[Path]:
    return [
        path
        for folder in ("appliance", "web")
        for path in _files(ROOT / folder)
        if not path.relative_to(ROOT).as_posix().startswith(SIZE_EXEMPT)
    ]


def test_no_module_is_over_500_lines() -> None:
    long = {
        path.relative_to(ROOT).as_posix(): n
        for path in _sized_files()
        if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, f"split these (over {MAX_FILE_LINES} lines): {long}"


def test_no_function_is_over_80_lines() -> None:
    long = {}
    for path in _sized_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT).as_posix()}:{node.name}"] = lines
    assert not long, f"split these (over {MAX_FUNCTION_LINES} lines): {long}"
