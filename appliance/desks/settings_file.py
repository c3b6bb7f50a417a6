"""The admin console's saved settings file as a table: read, merged, written as TOML.

``<data_dir>/settings.toml`` holds only the settings an admin changed in the console. A save
merges into it: the settings edited replace theirs, every other saved setting stays as it was.
The table is written back as TOML by :func:`dumps` (top-level ``name = value`` lines, then the
``[[destinations]]`` tables), which :func:`tomllib.loads` reads back to the same table.

A setting's value in a form field is :func:`field_text`; :func:`appliance.config._coerce` reads
it back with the setting's declared type (a list as comma-separated text, a switch as
``true`` / ``false``).
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def read(path: Path) -> dict[str, Any]:
    """The saved table, or an empty one when there is no file (a broken file raises)."""
    if not path.is_file():
        return {}
    return tomllib.loads(path.read_text(encoding="utf-8"))


def toml_value(value: Any) -> Any:
    """A coerced setting value as the TOML table holds it (a tuple as a list)."""
    if isinstance(value, tuple):
        return [toml_value(item) for item in value]
    return value


def merged(saved: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The saved table with ``changes`` (already TOML values) in place of their names."""
    return {**saved, **changes}


def dumps(table: Mapping[str, Any]) -> str:
    """``table`` as TOML text: scalars and lists first, then arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in table.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            tables.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, rows in tables:
        for row in rows:
            lines += ["", f"[[{_key(key)}]]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in row.items()]
    return "\n".join(lines) + "\n" if lines else ""


def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else _string(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in ESCAPES:
            out.append(ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def field_text(value: Any) -> str:
    """A setting's value as a form field shows it and ``config._coerce`` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)
