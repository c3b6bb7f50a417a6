"""The archives the outbox forwards to, as configured (``[[destinations]]`` tables)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Destination:
    """An archive the outbox forwards to (``[[destinations]]`` tables in the TOML file)."""

    name: str
    host: str = ""
    port: int = 0
    ae_title: str = ""
    kind: str = "dimse"  # "dimse" (C-STORE) or "stow" (DICOMweb STOW-RS)
    timeout: float = 30.0
    url: str = ""  # STOW-RS base URL, e.g. https://pacs/dicom-web
    username: str = ""
    password: str = field(default="", repr=False)
    storage_commitment: bool = False  # dimse only: local files kept until the archive commits
    tls: bool = False  # dimse only: DICOM TLS (Storage Commitment too)
    tls_ca: str = ""  # PEM CAs trusted for the archive's certificate; empty: the system's
    tls_cert: str = ""  # PEM client certificate, for archives that require one
    tls_key: str = ""


def parse(value: Any) -> tuple[Destination, ...]:
    """The ``destinations`` setting: ``[[destinations]]`` tables checked, or as given."""
    if isinstance(value, tuple) and all(isinstance(d, Destination) for d in value):
        return value
    if not isinstance(value, list):
        raise ValueError("destinations must be a list of [[destinations]] tables")
    out: list[Destination] = []
    for index, table in enumerate(value):
        where = f"destinations[{index}]"
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table")
        known = {f.name for f in fields(Destination)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}")
        kind = str(table.get("kind", "dimse"))
        required = {"dimse": ("name", "host", "port", "ae_title"), "stow": ("name", "url")}
        if kind not in required:
            raise ValueError(f"{where}: kind must be 'dimse' or 'stow', not {kind!r}")
        missing = [key for key in required[kind] if key not in table]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        commitment = table.get("storage_commitment", False)
        if not isinstance(commitment, bool):
            raise ValueError(f"{where}: storage_commitment must be true or false")
        if commitment and kind != "dimse":
            raise ValueError(f"{where}: storage_commitment needs kind = 'dimse'")
        tls = table.get("tls", False)
        if not isinstance(tls, bool):
            raise ValueError(f"{where}: tls must be true or false")
        if tls and kind != "dimse":
            raise ValueError(f"{where}: tls is for kind = 'dimse' (STOW-RS uses an https:// url)")
        tls_keys = [key for key in ("tls_ca", "tls_cert", "tls_key") if table.get(key)]
        if tls_keys and not tls:
            raise ValueError(f"{where}: {', '.join(tls_keys)} need tls = true")
        if bool(table.get("tls_cert")) != bool(table.get("tls_key")):
            raise ValueError(f"{where}: tls_cert and tls_key go together")
        try:
            destination = Destination(
                name=str(table["name"]),
                host=str(table.get("host", "")),
                port=int(table.get("port", 0)),
                ae_title=str(table.get("ae_title", "")),
                kind=kind,
                timeout=float(table.get("timeout", 30.0)),
                url=str(table.get("url", "")),
                username=str(table.get("username", "")),
                password=str(table.get("password", "")),
                storage_commitment=commitment,
                tls=tls,
                tls_ca=str(table.get("tls_ca", "")),
                tls_cert=str(table.get("tls_cert", "")),
                tls_key=str(table.get("tls_key", "")),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if destination.name in {d.name for d in out}:
            raise ValueError(f"{where}: duplicate name {destination.name!r}")
        out.append(destination)
    return tuple(out)
