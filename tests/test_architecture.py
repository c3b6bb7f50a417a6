"""The one-way data flow, checked on the source: stages never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["capture", "quality", "inference", "outcome", "dicom", "outbox"]
BUILT = [stage for stage in STAGES if (ROOT / "appliance" / stage).is_dir()]


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
