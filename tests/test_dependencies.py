"""The dependency lock, the environment the tests run in, the SOUP list and the licence policy."""

from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
REQS = ROOT / "firmware_scripts" / "requirements"
ARCH = platform.machine()


def _soup() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soup", REQS / "soup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soup"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


soup = _soup()


def _pins(name: str) -> dict[str, str]:
    return {n: p.version for n, p in soup.read_lock(REQS / name).items()}


@pytest.mark.parametrize("name", sorted(p.name for p in REQS.glob("*.txt")))
def test_every_lock_line_is_pinned_with_its_hashes(name: str) -> None:
    text = (REQS / name).read_text(encoding="utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # after uv's header
    for block in blocks:
        if not block.strip() or block.startswith("#"):
            continue
        assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+", block), block[:80]
        assert "--hash=sha256:" in block, block[:80]


def test_the_tests_run_in_exactly_the_dev_lock() -> None:
    """`make test` installed this venv from the lock: nothing more, nothing else."""
    lock = _pins(f"dev-{ARCH}.txt")
    installed = {
        soup.norm(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if soup.norm(d.metadata["Name"]) != soup.PROJECT
    }
    assert installed == lock


@pytest.mark.parametrize("arch", soup.ARCHES)
def test_the_sets_agree(arch: str) -> None:
    runtime, dev = _pins(f"runtime-{arch}.txt"), _pins(f"dev-{arch}.txt")
    assert {n: dev.get(n) for n in runtime} == runtime  # the dev set contains the runtime set
    if arch == "x86_64":
        gpu = _pins("gpu-x86_64.txt")
        assert gpu.pop("onnxruntime-gpu") == runtime.pop("onnxruntime")  # one ORT everywhere
        assert gpu == runtime


def test_every_requirement_in_pyproject_is_met_by_the_locks() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {
        "runtime-x86_64.txt": project["dependencies"],
        "dev-x86_64.txt": project["dependencies"] + project["optional-dependencies"]["dev"],
        "gpu-x86_64.txt": project["optional-dependencies"]["gpu"],
    }
    for lock, specs in groups.items():
        pins = _pins(lock)
        for spec in specs:
            requirement = Requirement(spec)
            name = soup.norm(requirement.name)
            assert name in pins, f"{name} is not in {lock}: run `make lock`"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {name} {pins[name]}, pyproject asks {requirement.specifier}"
            )


def test_the_soup_list_is_current_and_no_runtime_item_is_gpl() -> None:
    result = subprocess.run(
        [sys.executable, str(REQS / "soup.py"), "check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("licence", "copyleft"),
    [
        ("GPL-3.0-only", True),
        ("AGPL-3.0-or-later", True),
        ("GNU General Public License v2 (GPLv2)", True),
        ("GNU Affero General Public License v3", True),
        ("LGPL-2.1-or-later", False),
        ("GNU Lesser General Public License v3 (LGPLv3)", False),
        ("MIT OR GPL-2.0-only", False),
        ("GPL-2.0-only OR AGPL-3.0-only", True),
        ("BSD-3-Clause AND MIT", False),
        ("Apache 2.0", False),
    ],
)
def test_the_licence_policy(licence: str, copyleft: bool) -> None:
    assert soup.strong_copyleft(licence) is copyleft


def test_an_unknown_set_is_refused_with_the_sets_there_are(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ROOT / "firmware_scripts" / "install-venv"), str(tmp_path / "venv"), "nightly"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"no lock for 'nightly' on {ARCH}" in result.stderr and "runtime-" in result.stderr
    assert not (tmp_path / "venv").exists()
