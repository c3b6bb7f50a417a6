"""Test certificates made with the ``openssl`` command-line tool (RSA 2048, SHA-256).

:func:`make_pki` writes a CA, a server certificate for 127.0.0.1/localhost, a client
certificate, a server certificate that expired in 2020, and a second CA with a server
certificate of its own (untrusted by the first CA's holders), and a server certificate
for another name.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_tool

SAN = "subjectAltName=IP:127.0.0.1,DNS:localhost\n"


@dataclass(frozen=True)
class Pair:
    cert: str
    key: str


@dataclass(frozen=True)
class Pki:
    ca: str
    server: Pair
    client: Pair
    expired_server: Pair
    other_ca: str
    other_server: Pair  # signed by other_ca
    wrong_name_server: Pair  # for archive.example only


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> None:
    _run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=Test {name}",
        cwd=folder,
    )  # fmt: skip


def _csr(folder: Path, name: str, cn: str) -> None:
    _run(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
        "-out", f"{name}.csr", "-subj", f"/CN={cn}",
        cwd=folder,
    )  # fmt: skip


def _signed(folder: Path, name: str, ca: str, cn: str, san: str = "san.cnf") -> Pair:
    _csr(folder, name, cn)
    _run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-sha256", "-days", "2", "-extfile", san, "-out", f"{name}.pem",
        cwd=folder,
    )  # fmt: skip
    return Pair(str(folder / f"{name}.pem"), str(folder / f"{name}.key"))


def _expired(folder: Path, name: str, ca: str) -> Pair:
    """Valid 1-2 January 2020 only (``openssl ca`` sets the dates)."""
    _csr(folder, name, "localhost")
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("1000\n")
    (folder / "ca.cnf").write_text(
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
        "default_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n"
    )
    _run(
        "ca", "-batch", "-config", "ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key",
        "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext", "-extfile", "san.cnf",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
        cwd=folder,
    )  # fmt: skip
    return Pair(str(folder / f"{name}.pem"), str(folder / f"{name}.key"))


def make_pki(folder: Path) -> Pki:
    require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "san.cnf").write_text(SAN)
    (folder / "other-name.cnf").write_text("subjectAltName=DNS:archive.example\n")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    return Pki(
        ca=str(folder / "ca.pem"),
        server=_signed(folder, "server", "ca", "localhost"),
        client=_signed(folder, "client", "ca", "CAMERA1"),
        expired_server=_expired(folder, "expired", "ca"),
        other_ca=str(folder / "other-ca.pem"),
        other_server=_signed(folder, "other-server", "other-ca", "localhost"),
        wrong_name_server=_signed(folder, "wrong-name", "ca", "archive.example", "other-name.cnf"),
    )
