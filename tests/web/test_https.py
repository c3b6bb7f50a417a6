"""HTTPS when a certificate and key are configured: Secure cookies and HSTS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port, require_tool


def test_serve_speaks_https_with_secure_cookies_and_hsts(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_WEB_PORT": str(port),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_MODELS_DIR": str(tmp_path / "no-models"),
        "APPLIANCE_MIN_FREE_DISK_MB": "0",
        "APPLIANCE_WEB_TLS_CERT": str(cert),
        "APPLIANCE_WEB_TLS_KEY": str(key),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/login", context=context, timeout=5
                ) as response:
                    headers = response.headers
                    break
            except OSError:
                assert server.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "no HTTPS answer"
                time.sleep(0.2)
        assert "max-age=" in headers["Strict-Transport-Security"]
        cookie = headers["Set-Cookie"]
        assert "appliance_session=" in cookie
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        # plain HTTP on the same port is not served
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
            plain = True
        except OSError:
            plain = False
        assert not plain
    finally:
        server.terminate()
        server.wait(timeout=30)
