"""DICOM TLS on the SCP's second port (PS3.15 Annex B): dcmtk's ``echoscu``/``storescu`` with
``+tls`` as the camera, pynetdicom clients with and without a certificate, a plain client and a
silent connection on the TLS port. The plain port stays open beside it."""

from __future__ import annotations

import io
import json
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE

from appliance import config
from appliance.capture.scp import VERIFICATION
from appliance.config import Settings
from appliance.runtime.services import Services, scp_tls_context
from appliance.tls import TlsClient, client_context
from tests.conftest import free_port, op_bytes, require_tool, wait_for
from tests.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_settings(settings: Settings, pki: Pki) -> Settings:
    return settings.replace(
        dicom_tls_cert=pki.server.cert,
        dicom_tls_key=pki.server.key,
        dicom_tls_ca=pki.ca,
        dicom_tls_require_client_cert=True,
        dicom_tls_port=free_port(),
        dicom_request_seconds=1.0,
    )


@pytest.fixture
def tls_services(tls_settings: Settings) -> Iterator[Services]:
    svc = Services(tls_settings)
    svc.start(hotfolder=False, worker=False)
    try:
        yield svc
    finally:
        svc.stop()


def _events(services: Services, refused: str) -> list[dict[str, Any]]:
    rows = services.store.query("SELECT * FROM audit_events ORDER BY seq")
    out = [dict(row) | {"detail": json.loads(row["detail"])} for row in rows]
    return [row for row in out if row["detail"].get("refused") == refused]


def _echoscu(
    settings: Settings, *tls: str, port: int | None = None, calling: str = "CAMERA1"
) -> subprocess.CompletedProcess[str]:
    echoscu = require_tool("echoscu")
    return subprocess.run(
        [echoscu, "-aet", calling, "-aec", settings.dicom_ae_title, *tls, "127.0.0.1",
         str(port or settings.dicom_tls_port)],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip


def _client_tls(pki: Pki) -> list[str]:
    return ["+tls", pki.client.key, pki.client.cert, "+cf", pki.ca]


def _echo(settings: Settings, tls: TlsClient | None) -> Any:
    ae = AE(ae_title="CAMERA2")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.add_requested_context(VERIFICATION)
    context = client_context(tls) if tls is not None else None
    return ae.associate(
        "127.0.0.1",
        settings.dicom_tls_port,
        ae_title=settings.dicom_ae_title,
        tls_args=(context, "127.0.0.1") if context is not None else None,
    )


def test_dcmtk_over_tls_is_answered_and_stored(
    tls_settings: Settings, tls_services: Services, pki: Pki, tmp_path: Path
) -> None:
    assert "+tls" in subprocess.run(["echoscu", "--help"], capture_output=True, text=True).stdout
    echo = _echoscu(tls_settings, *_client_tls(pki))
    assert echo.returncode == 0, echo.stderr
    path = tmp_path / "camera.dcm"
    path.write_bytes(op_bytes(laterality="L", patient_id="TLS1"))
    sop_uid = pydicom.dcmread(path).SOPInstanceUID
    storescu = require_tool("storescu")
    sent = subprocess.run(
        [storescu, "-xy", "-aet", "CAMERA1", "-aec", tls_settings.dicom_ae_title,
         *_client_tls(pki), "127.0.0.1", str(tls_settings.dicom_tls_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    capture = tls_services.store.one(
        "SELECT * FROM captures WHERE sop_instance_uid = ?", (str(sop_uid),)
    )
    assert capture is not None and capture["calling_ae"] == "CAMERA1"
    stored = (tls_settings.data_path / capture["file_path"]).read_bytes()
    assert pydicom.dcmread(io.BytesIO(stored)).PatientID == "TLS1"
    # the plain port is still open for cameras that cannot do TLS
    assert _echoscu(tls_settings, port=tls_settings.dicom_port).returncode == 0


def _tls12(pki: Pki, ciphers: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki.ca)
    context.load_cert_chain(pki.client.cert, pki.client.key)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def test_tls_1_2_takes_only_forward_secret_aead_ciphers(
    tls_settings: Settings, tls_services: Services, pki: Pki
) -> None:
    address = ("127.0.0.1", tls_settings.dicom_tls_port)
    good = _tls12(pki, "ECDHE-RSA-AES128-GCM-SHA256")
    with socket.create_connection(address, timeout=5) as raw:
        with good.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
    for weak in ("AES128-SHA256", "ECDHE-RSA-AES128-SHA", "AES256-GCM-SHA384"):  # no FS / CBC
        with socket.create_connection(address, timeout=5) as raw:
            with pytest.raises(ssl.SSLError):
                _tls12(pki, weak).wrap_socket(raw, server_hostname="127.0.0.1")
    assert tls_services.scp is not None and tls_services.scp.tls is not None
    assert tls_services.scp.tls.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_plain_client_on_the_tls_port_is_refused_and_audited(
    tls_settings: Settings, tls_services: Services, pki: Pki
) -> None:
    plain = _echoscu(tls_settings)
    assert plain.returncode != 0
    (alert,) = wait_for(lambda: _events(tls_services, "tls_handshake"))
    assert alert["event_id"] == "110113" and alert["outcome"] == 4
    assert alert["source_address"] == "127.0.0.1"
    assert _echoscu(tls_settings, *_client_tls(pki)).returncode == 0  # still answers


def test_a_missing_or_untrusted_client_certificate_is_refused_as_a_security_alert(
    tls_settings: Settings, tls_services: Services, pki: Pki
) -> None:
    without = _echo(tls_settings, TlsClient(ca=pki.ca))
    assert not without.is_established
    untrusted = _echo(
        tls_settings, TlsClient(ca=pki.ca, cert=pki.other_server.cert, key=pki.other_server.key)
    )
    assert not untrusted.is_established
    (alert,) = wait_for(lambda: _events(tls_services, "tls_client_certificate"))
    assert alert["event_id"] == "110113" and alert["outcome"] == 8  # serious
    assert alert["detail"]["left_out"] == 0
    # with the certificate, the same client is answered
    good = _echo(tls_settings, TlsClient(ca=pki.ca, cert=pki.client.cert, key=pki.client.key))
    assert good.is_established
    assert good.send_c_echo().Status == 0x0000
    good.release()


def test_a_silent_connection_does_not_block_others_and_is_closed_at_the_deadline(
    tls_settings: Settings, tls_services: Services, pki: Pki
) -> None:
    with socket.create_connection(("127.0.0.1", tls_settings.dicom_tls_port)) as silent:
        began = time.monotonic()
        # pynetdicom's own TLS server would run this handshake in the accepting thread
        assert _echoscu(tls_settings, *_client_tls(pki)).returncode == 0
        silent.settimeout(10)
        assert silent.recv(1) == b""  # closed by the door ...
        waited = time.monotonic() - began
    assert waited >= tls_settings.dicom_request_seconds * 0.9  # ... at the deadline, not before
    (alert,) = wait_for(lambda: _events(tls_services, "request_timeout"))
    assert "TLS handshake" in alert["detail"]["message"]


def test_a_camera_that_must_use_tls_is_refused_on_the_plain_port(
    tls_settings: Settings, pki: Pki
) -> None:
    strict = tls_settings.replace(dicom_tls_required_aes=("CAMERA1",))
    svc = Services(strict)
    svc.start(hotfolder=False, worker=False)
    try:
        refused = _echoscu(strict, port=strict.dicom_port)
        assert refused.returncode != 0 and "Calling AE Title Not Recognized" in refused.stderr
        (alert,) = wait_for(lambda: _events(svc, "tls_required"))
        assert alert["outcome"] == 8 and alert["ae_title"] == "CAMERA1"
        assert _echoscu(strict, *_client_tls(pki)).returncode == 0  # over TLS: answered
        assert _echoscu(strict, port=strict.dicom_port, calling="OLDCAM").returncode == 0
    finally:
        svc.stop()


def test_tls_only_closes_the_plain_port(settings: Settings, pki: Pki) -> None:
    only = settings.replace(
        dicom_tls_cert=pki.server.cert,
        dicom_tls_key=pki.server.key,
        dicom_tls_port=free_port(),
        dicom_tls_only=True,
    )
    svc = Services(only)
    svc.start(hotfolder=False, worker=False)
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", only.dicom_port), timeout=2).close()
        assert _echo(only, TlsClient(ca=pki.ca)).is_established  # no client cert asked
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"tls_ca": "/ca.pem"}, "tls_ca need tls = true"),
        ({"tls": True, "tls_cert": "/c.pem"}, "tls_cert and tls_key go together"),
        ({"tls": "yes"}, "tls must be true or false"),
        ({"kind": "stow", "url": "https://pacs", "tls": True}, "tls is for kind = 'dimse'"),
    ],
)
def test_destination_tls_settings_are_checked(table: dict[str, Any], message: str) -> None:
    base = {"name": "pacs", "host": "pacs", "port": 2762, "ae_title": "PACS"}
    with pytest.raises(ValueError, match=re.escape(message)):
        config.load(environ={}, destinations=[base | table])
    (loaded,) = config.load(
        environ={}, destinations=[base | {"tls": True, "tls_ca": "/ca.pem"}]
    ).destinations
    assert loaded.tls and loaded.tls_ca == "/ca.pem"


def test_scp_tls_settings_are_checked(settings: Settings, pki: Pki) -> None:
    assert scp_tls_context(settings) is None  # no certificate: no TLS port
    with pytest.raises(ValueError, match="go together"):
        scp_tls_context(settings.replace(dicom_tls_cert=pki.server.cert))
    with pytest.raises(ValueError, match="needs dicom_tls_ca"):
        scp_tls_context(
            settings.replace(
                dicom_tls_cert=pki.server.cert,
                dicom_tls_key=pki.server.key,
                dicom_tls_require_client_cert=True,
            )
        )
