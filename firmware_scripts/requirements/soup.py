"""The SOUP list (IEC 62304 5.3.3 / 8.1.2) from the lock files, and the licence policy.

    soup.py write            # docs/soup.md, then check
    soup.py check            # exit 1: the list is out of date or the policy is broken
    soup.py sbom FILE        # complete licences in a CycloneDX SBOM; exit 1 unless it is the
                             # runtime lock

Versions come from the lock files beside this script; licences from the installed packages'
metadata (run it in the dev venv, which holds every locked package) or, where a package states
none or is not installed here, from ``soup.toml``; purposes from ``soup.toml``. The appliance is
closed source: no runtime item may carry a GPL or AGPL licence (LGPL and dual licences with a
permissive alternative are allowed).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SOUP_MD = ROOT / "docs" / "soup.md"
ARCHES = ("x86_64", "aarch64")
PROJECT = "retina-appliance"


def norm(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    via: tuple[str, ...]  # what requires it, as uv annotated the lock ("-r ..." = direct)


def read_lock(path: Path) -> dict[str, Locked]:
    """name → pin, with uv's ``# via`` annotations."""
    out: dict[str, Locked] = {}
    current: tuple[str, str] | None = None
    via: list[str] = []
    in_via = False

    def flush() -> None:
        if current is not None:
            out[current[0]] = Locked(current[0], current[1], tuple(via))

    for line in path.read_text(encoding="utf-8").splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if pin:
            flush()
            current, via, in_via = (norm(pin.group(1)), pin.group(2)), [], False
            continue
        stripped = line.strip()
        if stripped.startswith("# via"):
            rest = stripped[len("# via") :].strip()
            if rest:
                via.append(rest)
            in_via = not rest
        elif in_via and stripped.startswith("#   "):
            via.append(stripped[4:].strip())
        else:
            in_via = False
    flush()
    return out


def direct_dependencies() -> dict[str, str]:
    """name → which part of pyproject.toml (or build.in) asks for it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"runtime": project["dependencies"], **project["optional-dependencies"]}
    out: dict[str, str] = {}
    for group, specs in groups.items():
        for spec in specs:
            match = re.match(r"[A-Za-z0-9._-]+", spec)
            if match:
                out.setdefault(norm(match.group(0)), group)
    for line in (HERE / "build.in").read_text(encoding="utf-8").splitlines():
        match = re.match(r"[A-Za-z0-9._-]+", line.strip())
        if match and not line.startswith("#"):
            out.setdefault(norm(match.group(0)), "build")
    return out


def purposes() -> dict[str, dict[str, str]]:
    data = tomllib.loads((HERE / "soup.toml").read_text(encoding="utf-8"))
    return {norm(name): entry for name, entry in data.get("packages", {}).items()}


def installed_licences() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        meta = dist.metadata
        name = norm(meta["Name"])
        expression = (meta.get("License-Expression") or "").strip()
        text = (meta.get("License") or "").strip()
        classifiers = [
            c.split(" :: ")[-1]
            for c in meta.get_all("Classifier") or []
            if c.startswith("License ::") and c != "License :: OSI Approved"
        ]
        if expression:
            out[name] = expression
        elif text and "\n" not in text and len(text) <= 40 and text.upper() != "UNKNOWN":
            out[name] = text
        elif classifiers:
            out[name] = " / ".join(classifiers)
        else:
            out[name] = "UNKNOWN"
    return out


def strong_copyleft(licence: str) -> bool:
    """GPL or AGPL (any version), unless an SPDX ``OR`` offers an alternative that is not."""

    def one(text: str) -> bool:
        return bool(
            re.search(r"(?<![L])\bA?GPL|(?<![L])A?GPL[v-]", text)
            or re.search(r"GNU (Affero )?General Public", text, re.I)
        )

    alternatives = re.split(r"\s+OR\s+", licence)
    return all(one(alt) for alt in alternatives)


@dataclass(frozen=True)
class Item:
    name: str
    version: str
    licence: str
    purpose: str
    checked_by: str


def items(
    lock: dict[str, Locked], lic: dict[str, str], info: dict[str, dict[str, str]]
) -> list[Item]:
    out = []
    for name, pin in sorted(lock.items()):
        entry = info.get(name, {})
        needed_by = sorted({v for v in pin.via if not v.startswith(("-r ", "-c "))})
        purpose = entry.get("purpose") or ("needed by " + ", ".join(needed_by) if needed_by else "")
        licence = entry.get("licence") or lic.get(name, "UNKNOWN")
        out.append(Item(name, pin.version, licence, purpose, entry.get("checked_by", "")))
    return out


def _row(*cells: str) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render() -> str:
    runtime = read_lock(HERE / "runtime-x86_64.txt")
    dev = read_lock(HERE / "dev-x86_64.txt")
    gpu = read_lock(HERE / "gpu-x86_64.txt")
    lic, info = installed_licences(), purposes()
    lines = [
        "# SOUP list: third-party software in the appliance",
        "",
        "Generated by `make soup` from the lock files in `firmware_scripts/requirements/` and",
        "the installed packages' metadata, with purposes from",
        "`firmware_scripts/requirements/soup.toml`. Do not edit by hand: the test suite fails",
        "when this file is out of date. Python 3.11; versions as locked for x86_64 (aarch64",
        "differences are listed below). Policy, checked by the tests: no runtime item carries a",
        "GPL or AGPL licence (the appliance is closed source).",
        "",
        f"## Runtime: installed on every appliance ({len(runtime)} items)",
        "",
        _row("package", "version", "licence", "what we use it for", "how the tests exercise it"),
        _row("---", "---", "---", "---", "---"),
    ]
    lines += [
        _row(i.name, i.version, i.licence, i.purpose, i.checked_by)
        for i in items(runtime, lic, info)
    ]
    swapped = {n: p for n, p in gpu.items() if n not in runtime or runtime[n].version != p.version}
    lines += [
        "",
        "## x86 GPU boxes (`gpu-x86_64.txt`): the runtime set with these in place of onnxruntime",
        "",
        _row("package", "version", "licence", "what we use it for", "how the tests exercise it"),
        _row("---", "---", "---", "---", "---"),
    ]
    lines += [
        _row(i.name, i.version, i.licence, i.purpose, i.checked_by)
        for i in items(swapped, lic, info)
    ]
    lines += [
        "",
        "On a Jetson, install.sh installs the runtime set for aarch64 and the vendor's",
        "onnxruntime-gpu wheel for the JetPack release (`--ort-wheel`; PyPI has no aarch64 GPU",
        "build); its version and SHA-256 are recorded in the device's manifest.",
    ]
    dev_only = {n: p for n, p in dev.items() if n not in runtime}
    lines += [
        "",
        f"## Development and CI only: never installed on an appliance ({len(dev_only)} items)",
        "",
        _row("package", "version", "licence", "what we use it for"),
        _row("---", "---", "---", "---"),
    ]
    lines += [_row(i.name, i.version, i.licence, i.purpose) for i in items(dev_only, lic, info)]
    lines += ["", "## aarch64 (Jetson) lock: versions that differ from x86_64", ""]
    diffs = []
    for name in ("runtime", "dev"):
        x86 = read_lock(HERE / f"{name}-x86_64.txt")
        arm = read_lock(HERE / f"{name}-aarch64.txt")
        for pkg in sorted(set(x86) | set(arm)):
            a = x86[pkg].version if pkg in x86 else "—"
            b = arm[pkg].version if pkg in arm else "—"
            if a != b:
                diffs.append(f"- {name}: {pkg} {a} (x86_64), {b} (aarch64)")
    lines += diffs or ["None: both platforms install the same versions."]
    lines += [
        "",
        "## Outside the lock",
        "",
        "- The operating system and CPython 3.11 (with its bundled SQLite and OpenSSL) come from",
        "  the device image; install.sh records their versions in the manifest.",
        "- The tests also use Debian packages that are never part of the appliance: dcmtk,",
        "  dicom3tools, Orthanc with its DICOMweb plugin, poppler-utils, shellcheck, chromium and",
        "  chromium-driver (`.ci/run` installs them).",
        "",
    ]
    return "\n".join(lines)


def problems() -> list[str]:
    found = []
    runtime = read_lock(HERE / "runtime-x86_64.txt")
    gpu = read_lock(HERE / "gpu-x86_64.txt")
    dev = read_lock(HERE / "dev-x86_64.txt")
    lic, info = installed_licences(), purposes()
    shipped = {**runtime, **gpu}
    for item in items(shipped, lic, info):
        if item.licence == "UNKNOWN":
            found.append(f"{item.name}: no licence in its metadata; state it in soup.toml")
        elif strong_copyleft(item.licence):
            found.append(f"{item.name} {item.version}: {item.licence} is not allowed at runtime")
    for name, group in direct_dependencies().items():
        if group == "train":  # `make models` only, in a venv of its own; never shipped
            continue
        entry = info.get(name, {})
        if not entry.get("purpose"):
            found.append(f"{name} ({group}): no purpose in soup.toml")
        if group in ("runtime", "gpu") and not entry.get("checked_by"):
            found.append(f"{name} ({group}): no checked_by in soup.toml")
        if name not in dev and name not in gpu:
            found.append(f"{name} ({group}): in pyproject.toml but not locked (run `make lock`)")
    for item in items(dev, lic, info):
        if item.licence == "UNKNOWN":
            found.append(f"{item.name}: no licence in its metadata; state it in soup.toml")
    if not SOUP_MD.is_file() or SOUP_MD.read_text(encoding="utf-8") != render():
        found.append(f"{SOUP_MD.relative_to(ROOT)} is out of date: run `make soup`")
    return found


def complete_sbom(path: Path) -> list[str]:
    """Give each SBOM component without a licence the one soup.toml states (CycloneDX
    ``acknowledgement: concluded``: some packages' metadata names its licence in words no tool
    maps to SPDX), then check that the SBOM names exactly the runtime lock, each with a licence."""
    bom = json.loads(path.read_text(encoding="utf-8"))
    info = purposes()
    for comp in bom.get("components", []):
        stated = info.get(norm(comp["name"]), {}).get("licence")
        if not comp.get("licenses") and stated:
            comp["licenses"] = [{"expression": stated, "acknowledgement": "concluded"}]
    path.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    found = []
    components = {norm(c["name"]): c for c in bom.get("components", [])}
    components.pop(norm(PROJECT), None)
    lock = read_lock(HERE / "runtime-x86_64.txt")
    for name, pin in lock.items():
        comp = components.get(name)
        if comp is None:
            found.append(f"{name} {pin.version}: missing from the SBOM")
        elif comp.get("version") != pin.version:
            found.append(f"{name}: SBOM {comp.get('version')}, lock {pin.version}")
        elif not comp.get("licenses"):
            found.append(f"{name}: no licence in the SBOM; state it in soup.toml")
    found += [f"{name}: in the SBOM but not locked" for name in sorted(set(components) - set(lock))]
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["write"]:
        SOUP_MD.write_text(render(), encoding="utf-8")
        print(f"wrote {SOUP_MD.relative_to(ROOT)}")
        argv = ["check"]
    if argv[:1] == ["check"]:
        found = problems()
    elif argv[:1] == ["sbom"] and len(argv) == 2:
        found = complete_sbom(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for problem in found:
        print(f"soup: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
