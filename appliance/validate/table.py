"""Reading a labels CSV with errors that name the file, the line and the column.

Header names are matched loosely (case, surrounding whitespace, and ``_``/``-`` versus space do
not matter: the real IDRiD file has ``"Risk of macular edema "`` with a trailing space). Every
value error says where it is, e.g. ``labels.csv: line 7, column 'dr_grade': expected an
integer 0-4, got '5'``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TRUE = {"1", "true", "yes", "y", "1.0"}
_FALSE = {"0", "false", "no", "n", "0.0"}


def normalise(name: str) -> str:
    """The form header names are compared in: ``' Image_Name '`` → ``'image name'``."""
    return " ".join(name.replace("_", " ").replace("-", " ").lower().split())


@dataclass(frozen=True)
class Table:
    path: Path
    names: list[str]  # header as written
    header_line: int
    index: dict[str, int]  # normalised name → column index
    records: list[tuple[int, list[str]]]  # (line number, cells)

    def has(self, column: str) -> bool:
        return normalise(column) in self.index

    def require(self, columns: Sequence[str], *, note: str = "") -> None:
        missing = [c for c in columns if not self.has(c)]
        if missing:
            found = ", ".join(repr(n) for n in self.names)
            names = ", ".join(map(repr, missing))
            raise ValueError(
                f"{self.path}: line {self.header_line}: missing column(s) {names}"
                f" (found {found}){note}"
            )

    def cells(self) -> Iterator[Cells]:
        for line, values in self.records:
            yield Cells(self, line, values)


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        LOGGER.warning("%s is not UTF-8; reading it as Latin-1", path)
        return data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")


def read_table(path: Path) -> Table:
    """Parse ``path`` as CSV: the first non-blank line is the header; blank lines are skipped."""
    if not path.is_file():
        raise ValueError(f"{path}: labels file not found")
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    names: list[str] | None = None
    header_line = 1
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for values in reader:
            line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if names is None:
                names, header_line = values, line
                continue
            records.append((line, values))
    except csv.Error as exc:
        raise ValueError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from exc
    if names is None:
        raise ValueError(f"{path}: line 1: the file is empty (no header)")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        key = normalise(name)
        if key and key not in index:
            index[key] = i
    return Table(path, names, header_line, index, records)


@dataclass(frozen=True)
class Cells:
    """One data row, with parsers that raise errors naming file, line and column."""

    table: Table
    line: int
    values: list[str]

    def error(self, column: str, message: str) -> ValueError:
        i = self.table.index.get(normalise(column))
        shown = self.table.names[i].strip() if i is not None else column
        return ValueError(f"{self.table.path}: line {self.line}, column '{shown}': {message}")

    def text(self, column: str) -> str:
        i = self.table.index.get(normalise(column))
        if i is None or i >= len(self.values):
            return ""
        return self.values[i].strip()

    def required(self, column: str) -> str:
        value = self.text(column)
        if not value:
            raise self.error(column, "empty value")
        return value

    def integer(self, column: str, low: int, high: int) -> int | None:
        value = self.text(column)
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not number.is_integer() or not low <= number <= high:
            raise self.error(column, f"expected an integer {low}-{high}, got {value!r}")
        return int(number)

    def flag(self, column: str) -> bool | None:
        value = self.text(column).lower()
        if not value:
            return None
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self.error(column, f"expected 0 or 1, got {self.text(column)!r}")

    def number(self, column: str, low: float, high: float) -> float | None:
        value = self.text(column)
        if not value:
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:  # also refuses NaN and inf
            raise self.error(column, f"expected a number in [{low:g}, {high:g}], got {value!r}")
        return number

    def image(
        self,
        column: str,
        root: Path,
        folders: Sequence[str] = ("",),
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> str:
        """Find the image file a label names; return its path relative to ``root``.

        A name with an image extension is looked up as written; a bare stem gets each of
        ``extensions`` (lower then upper case) in turn. Each folder of ``folders``
        (relative to ``root``) is tried in order. Absolute names stay absolute.
        """
        name = self.required(column)
        given = Path(name)
        if given.suffix.lower() in IMAGE_EXTENSIONS:
            names = [name]
        else:
            exts = [e for ext in extensions for e in (ext, ext.upper())]
            names = [name + ext for ext in exts]
        tried: list[str] = []
        for folder in ("",) if given.is_absolute() else folders:
            for candidate in names:
                relative = Path(folder, candidate)
                if (root / relative).is_file():
                    return relative.as_posix()
                tried.append(relative.as_posix())
        shown = ", ".join(tried[:4]) + (", ..." if len(tried) > 4 else "")
        raise self.error(column, f"image {name!r} not found in {root} (tried {shown})")
