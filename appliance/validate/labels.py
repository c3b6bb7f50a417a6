"""Gold-standard labels from a clinic's or a public data set's files, as :class:`Row` records.

Each format reads one CSV (the ``labels`` argument, or the format's usual file name inside the
data set folder) and checks that every image it names exists. Any format also picks up the
optional subgroup columns ``camera``, ``pigmentation``, ``age_band``, ``sex`` and ``eye`` when
present, so a clinic can add its own. Eyes are written ``right``/``left`` whatever the source
says (R/L, OD/OS); a numeric pigmentation in [0, 1] becomes ``light`` (< 1/3), ``medium`` or
``dark`` (>= 2/3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.validate.table import IMAGE_EXTENSIONS, Cells, Table, read_table

LOGGER = logging.getLogger(__name__)

FORMATS = ("synth", "aptos", "eyepacs", "messidor2", "idrid", "refuge", "eyeq")
QUALITIES = ("good", "usable", "reject")
SUBGROUP_COLUMNS = ("camera", "pigmentation", "age_band", "sex", "eye")

# Usual label file names, tried in order when ``labels`` is not given.
DEFAULT_LABELS: dict[str, tuple[str, ...]] = {
    "synth": ("labels.csv",),
    "aptos": ("train.csv", "labels.csv"),
    "eyepacs": ("trainLabels.csv", "labels.csv"),
    "messidor2": ("messidor_data.csv", "messidor-2.csv", "labels.csv"),
    "idrid": (
        "IDRiD_Disease Grading_Training Labels.csv",
        "IDRiD_Disease Grading_Testing Labels.csv",
        "labels.csv",
    ),
    "refuge": ("labels.csv", "OrigaList.csv"),
    "eyeq": ("Label_EyeQ_test.csv", "Label_EyeQ_train.csv", "labels.csv"),
}


def derive_referable(dr_grade: int | None, dme: bool | None) -> bool | None:
    """Referable diabetic retinopathy: ICDR grade >= 2 (moderate NPDR or worse) or DME.

    When DME was not graded (APTOS, EyePACS) the grade alone decides, the usual convention
    for those data sets; with neither known the answer is unknown.
    """
    if dme is True or (dr_grade is not None and dr_grade >= 2):
        return True
    if dr_grade is None:
        return None
    return False


@dataclass(frozen=True)
class Row:
    """One image and what the reference standard says about it (``None``: not graded)."""

    image: str  # relative to the data set folder, or absolute
    dr_grade: int | None = None  # ICDR 0-4
    referable_dr: bool | None = None  # derived from dr_grade and dme when not given
    dme: bool | None = None
    cdr: float | None = None  # vertical cup-to-disc ratio
    glaucoma_suspect: bool | None = None
    gradable: bool | None = None
    quality: str | None = None  # "good" / "usable" / "reject"
    subgroups: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError("Row.image must not be empty")
        if self.dr_grade is not None and self.dr_grade not in range(5):
            raise ValueError(f"{self.image}: dr_grade must be 0-4, got {self.dr_grade!r}")
        if self.cdr is not None and not 0.0 <= self.cdr <= 1.0:
            raise ValueError(f"{self.image}: cdr must be in [0, 1], got {self.cdr!r}")
        if self.quality is not None and self.quality not in QUALITIES:
            raise ValueError(f"{self.image}: quality must be one of {QUALITIES}")
        if self.referable_dr is None:
            object.__setattr__(self, "referable_dr", derive_referable(self.dr_grade, self.dme))


def _eye(value: str) -> str:
    key = value.strip().lower()
    if key in ("r", "od", "right", "re"):
        return "right"
    if key in ("l", "os", "left", "le"):
        return "left"
    return value.strip()


def _pigmentation(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    if not 0.0 <= number <= 1.0:
        return value
    return "light" if number < 1 / 3 else "dark" if number >= 2 / 3 else "medium"


def _subgroups(cells: Cells) -> dict[str, str]:
    found: dict[str, str] = {}
    for column in SUBGROUP_COLUMNS:
        value = cells.text(column)
        if value:
            found[column] = (
                _eye(value)
                if column == "eye"
                else _pigmentation(value)
                if column == "pigmentation"
                else value
            )
    return found


def _eye_from_name(image: str, groups: dict[str, str]) -> dict[str, str]:
    stem = Path(image).stem.lower()
    for suffix, eye in (("_left", "left"), ("_right", "right")):
        if stem.endswith(suffix):
            return {"eye": eye, **groups}
    return groups


class _Images:
    """Finds each labelled image under the data set folder and refuses one listed twice."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, int] = {}

    def find(
        self, cells: Cells, column: str, folders: tuple[str, ...] = ("",), first: str = ".png"
    ) -> str:
        """The image's path; bare names try ``first`` before the other known extensions."""
        extensions = (first, *(e for e in IMAGE_EXTENSIONS if e != first))
        image = cells.image(column, self.root, folders, extensions)
        if image in self.seen:
            line = self.seen[image]
            raise cells.error(column, f"image {image!r} is listed again (first on line {line})")
        self.seen[image] = cells.line
        return image


def _synth(table: Table, images: _Images) -> Iterator[Row]:
    table.require(
        ["image", "dr_grade", "referable_dr", "dme", "cdr", "glaucoma_suspect", "gradable"]
        + ["quality", *SUBGROUP_COLUMNS]
    )
    for cells in table.cells():
        quality = cells.text("quality").lower() or None
        if quality is not None and quality not in QUALITIES:
            raise cells.error("quality", f"expected good/usable/reject, got {quality!r}")
        yield Row(
            image=images.find(cells, "image"),
            dr_grade=cells.integer("dr_grade", 0, 4),
            referable_dr=cells.flag("referable_dr"),
            dme=cells.flag("dme"),
            cdr=cells.number("cdr", 0.0, 1.0),
            glaucoma_suspect=cells.flag("glaucoma_suspect"),
            gradable=cells.flag("gradable"),
            quality=quality,
            subgroups=_subgroups(cells),
        )


def _aptos(table: Table, images: _Images) -> Iterator[Row]:
    table.require(["id_code", "diagnosis"])
    for cells in table.cells():
        image = images.find(cells, "id_code", ("train_images", "", "test_images", "images"))
        yield Row(image, dr_grade=cells.integer("diagnosis", 0, 4), subgroups=_subgroups(cells))


def _eyepacs(table: Table, images: _Images) -> Iterator[Row]:
    table.require(["image", "level"])
    for cells in table.cells():
        image = images.find(cells, "image", ("", "train", "test", "images"), ".jpeg")
        groups = _eye_from_name(image, _subgroups(cells))
        yield Row(image, dr_grade=cells.integer("level", 0, 4), subgroups=groups)


def _messidor2(table: Table, images: _Images) -> Iterator[Row]:
    columns = ["image_id", "adjudicated_dr_grade", "adjudicated_dme", "adjudicated_gradable"]
    table.require(columns)
    for cells in table.cells():
        yield Row(
            image=images.find(cells, "image_id", ("", "images", "IMAGES", "messidor-2"), ".tif"),
            dr_grade=cells.integer("adjudicated_dr_grade", 0, 4),
            dme=cells.flag("adjudicated_dme"),
            gradable=cells.flag("adjudicated_gradable"),
            subgroups=_subgroups(cells),
        )


def _idrid(table: Table, images: _Images) -> Iterator[Row]:
    table.require(["Image name", "Retinopathy grade", "Risk of macular edema"])
    folders = ("", "a. Training Set", "b. Testing Set", "images")
    for cells in table.cells():
        risk = cells.integer("Risk of macular edema", 0, 2)
        yield Row(
            image=images.find(cells, "Image name", folders, ".jpg"),
            dr_grade=cells.integer("Retinopathy grade", 0, 4),
            dme=None if risk is None else risk >= 1,
            subgroups=_subgroups(cells),
        )


def _refuge(table: Table, images: _Images) -> Iterator[Row]:
    folders = ("", "images", "Images")
    if table.has("ImgName"):  # REFUGE: ImgName, Label (1 = glaucoma)
        label = "Label" if table.has("Label") else "Glaucoma Label"
        table.require(["ImgName", label])
        for cells in table.cells():
            yield Row(
                image=images.find(cells, "ImgName", folders, ".jpg"),
                glaucoma_suspect=cells.flag(label),
                subgroups=_subgroups(cells),
            )
        return
    note = " (REFUGE needs ImgName,Label; ORIGA needs Filename,ExpCDR,Glaucoma)"
    table.require(["Filename", "ExpCDR", "Glaucoma"], note=note)
    for cells in table.cells():
        yield Row(
            image=images.find(cells, "Filename", folders, ".jpg"),
            cdr=cells.number("ExpCDR", 0.0, 1.0),
            glaucoma_suspect=cells.flag("Glaucoma"),
            subgroups=_subgroups(cells),
        )


def _eyeq(table: Table, images: _Images) -> Iterator[Row]:
    table.require(["image", "quality"])
    for cells in table.cells():
        image = images.find(cells, "image", ("", "original", "train", "test", "images"), ".jpeg")
        level = cells.integer("quality", 0, 2)
        grade = cells.integer("DR_grade", 0, 4) if table.has("DR_grade") else None
        yield Row(
            image,
            dr_grade=grade,
            gradable=None if level is None else level != 2,
            quality=None if level is None else QUALITIES[level],
            subgroups=_eye_from_name(image, _subgroups(cells)),
        )


_READERS: dict[str, Callable[[Table, _Images], Iterator[Row]]] = {
    "synth": _synth,
    "aptos": _aptos,
    "eyepacs": _eyepacs,
    "messidor2": _messidor2,
    "idrid": _idrid,
    "refuge": _refuge,
    "eyeq": _eyeq,
}


def default_labels(dataset_dir: Path, fmt: str) -> Path:
    """The format's usual labels file in ``dataset_dir``, else the folder's only CSV."""
    for name in DEFAULT_LABELS[fmt]:
        if (dataset_dir / name).is_file():
            return dataset_dir / name
    csvs = sorted(p for p in dataset_dir.glob("*.csv") if p.is_file())
    if len(csvs) == 1:
        LOGGER.info("using %s as the %s labels file", csvs[0], fmt)
        return csvs[0]
    tried = ", ".join(DEFAULT_LABELS[fmt])
    raise ValueError(f"{dataset_dir}: no {fmt} labels file found (tried {tried}); pass labels")


def read_labels(dataset_dir: Path, labels: Path | None, fmt: str) -> list[Row]:
    """The reference-standard rows of a data set in one of :data:`FORMATS`.

    ``labels`` is the CSV to read (default: the format's usual file name in ``dataset_dir``).
    Raises ValueError naming the file, line and column on a missing column, a bad value, a
    repeated image or an image that does not exist.
    """
    if fmt not in _READERS:
        raise ValueError(f"unknown labels format {fmt!r}; choose one of {', '.join(FORMATS)}")
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise ValueError(f"{dataset_dir}: data set folder not found")
    path = Path(labels) if labels is not None else default_labels(dataset_dir, fmt)
    table = read_table(path)
    rows = list(_READERS[fmt](table, _Images(dataset_dir)))
    if not rows:
        raise ValueError(f"{path}: no data rows")
    LOGGER.info("read %d %s labels from %s", len(rows), fmt, path)
    return rows
