"""Model cards: what a model is, how to feed it, and the hash its file must have."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError
from appliance.inference.preprocess import COLOUR_METHODS

DISCLAIMER = "demonstration model trained on synthetic images — not clinically validated"
FUNDUS_TASKS = ("gradability", "dr", "glaucoma")
OCT_TASKS = ("oct-fluid",)  # appliance.inference.oct.fluid_net
TASKS = FUNDUS_TASKS + OCT_TASKS
REQUIRED = ("name", "version", "task", "files", "input", "outputs", "thresholds", "disclaimer")


class ModelIntegrityError(ApplianceError):
    http_status = 503
    reason = "model_integrity"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCard:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelIntegrityError(f"model card {path.name} cannot be read: {exc}") from None
        missing = [key for key in REQUIRED if key not in data]
        if missing:
            raise ModelIntegrityError(f"model card {path.name} lacks {', '.join(missing)}")
        if data["task"] not in TASKS:
            raise ModelIntegrityError(f"model card {path.name}: unknown task {data['task']!r}")
        colour = data["input"].get("colour", "none") if isinstance(data["input"], dict) else None
        if colour not in COLOUR_METHODS:
            raise ModelIntegrityError(
                f"model card {path.name}: unknown input colour normalisation {colour!r} "
                f"(known: {', '.join(COLOUR_METHODS)})"
            )
        return cls(Path(path), data)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def task(self) -> str:
        return str(self.data["task"])

    @property
    def input(self) -> dict[str, Any]:
        return dict(self.data["input"])

    @property
    def thresholds(self) -> dict[str, Any]:
        return {key: value["value"] for key, value in self.data["thresholds"].items()}

    @property
    def demonstration(self) -> bool:
        return DISCLAIMER in str(self.data.get("disclaimer", ""))

    def variants(self) -> list[str]:
        return list(self.data["files"])

    def model_path(self, variant: str) -> Path:
        try:
            entry = self.data["files"][variant]
        except KeyError:
            raise ModelIntegrityError(
                f"model {self.name} has no {variant!r} file (has: {', '.join(self.variants())})"
            ) from None
        path = (self.path.parent / entry["path"]).resolve()
        if not path.is_relative_to(self.path.parent.resolve()):
            raise ModelIntegrityError(f"model {self.name}: file path leaves the models folder")
        return path

    def verify(self, variant: str) -> Path:
        """The model file's path, after checking its SHA-256 against the card."""
        path = self.model_path(variant)
        if not path.is_file():
            raise ModelIntegrityError(f"model {self.name} {variant}: file {path.name} is missing")
        expected = str(self.data["files"][variant]["sha256"])
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"model {self.name} {variant}: file {path.name} does not match its card "
                f"(sha256 {actual[:12]}… ≠ {expected[:12]}…); refusing to load it"
            )
        return path

    def domain_path(self) -> Path | None:
        """The out-of-domain reference this card names (``"domain": {"path", "sha256"}``),
        after checking its SHA-256; None when the card names none. A guard whose file was
        changed or removed is refused like a model file: it decides which results stand."""
        entry = self.data.get("domain")
        if not entry:
            return None
        path = (self.path.parent / str(entry["path"])).resolve()
        if not path.is_relative_to(self.path.parent.resolve()) or not path.is_file():
            raise ModelIntegrityError(f"model {self.name}: domain reference {path.name} is missing")
        actual = sha256_file(path)
        if actual != str(entry["sha256"]):
            raise ModelIntegrityError(
                f"model {self.name}: domain reference {path.name} does not match its card "
                f"(sha256 {actual[:12]}… ≠ {str(entry['sha256'])[:12]}…); refusing to load it"
            )
        return path

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "disclaimer": self.data["disclaimer"],
        }


def find_cards(models_dir: Path) -> list[ModelCard]:
    """Every ``*.card.json`` in the folder, sorted by name."""
    if not models_dir.is_dir():
        return []
    return [ModelCard.load(path) for path in sorted(models_dir.glob("*.card.json"))]
