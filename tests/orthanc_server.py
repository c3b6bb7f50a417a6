"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on loopback ports, for tests.

Each :class:`Orthanc` runs its own process with its own JSON configuration in a temporary
directory (storage, index, log); the system service is never used. Restart on the same ports
and storage by passing ``root`` / ``dicom_port`` / ``http_port`` of a stopped one. ``modalities``
declares remote AEs (``DicomModalities``: name → (AE title, host, port)), e.g. the appliance, to
which Orthanc sends its Storage Commitment reports (N-EVENT-REPORT on a new association).
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.conftest import free_port, require_tool

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))


def orthanc_binary() -> str:
    """``Orthanc``'s path; skips locally / fails under ``CI=true`` when it is not installed."""
    found = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None
    )
    return found or require_tool("Orthanc")


def dicomweb_plugin() -> str:
    """The DICOMweb plugin (Debian ``orthanc-dicomweb``), with the same skip / fail rule."""
    for folder in PLUGIN_DIRS:
        for candidate in sorted(folder.glob("libOrthancDicomWeb.so*")):
            return str(candidate)
    return require_tool("libOrthancDicomWeb.so")  # not on PATH: skip / fail with the message


def worklist_plugin() -> str:
    """The Modality Worklists sample plugin (shipped with Debian ``orthanc``)."""
    for folder in PLUGIN_DIRS:
        for candidate in sorted(folder.glob("libModalityWorklists.so*")):
            return str(candidate)
    return require_tool("libModalityWorklists.so")


class Orthanc:
    def __init__(
        self,
        root: Path | None = None,
        *,
        dicom_port: int | None = None,
        http_port: int | None = None,
        aet: str = "ORTHANC",
        startup_timeout: float = 20.0,
        worklists: Path | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
    ) -> None:
        self.binary = orthanc_binary()
        self.plugin = dicomweb_plugin()
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="orthanc-")) if root is None else Path(root)
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.aet = aet
        self.startup_timeout = startup_timeout
        self.log_path = self.root / "orthanc.log"
        self.startup_seconds = 0.0
        self.worklists = worklists  # a folder of *.wl files served over MWL C-FIND
        self.modalities = dict(modalities or {})
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "screening-test-orthanc",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "DicomServerEnabled": True,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "Plugins": [self.plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 1,
            "SaveJobs": False,
        }

    def _with_worklists(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.worklists is not None:
            config["Plugins"] = [*config["Plugins"], worklist_plugin()]
            config["Worklists"] = {"Enable": True, "Database": str(self.worklists)}
            config["DicomAlwaysAllowFindWorklist"] = True  # any station may query
        return config

    def _with_modalities(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.modalities:
            config["DicomModalities"] = {
                name: [aet, host, port] for name, (aet, host, port) in self.modalities.items()
            }
        return config

    def start(self) -> Orthanc:
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        (self.root / "index").mkdir(parents=True, exist_ok=True)
        config_path = self.root / "orthanc.json"
        config = self._with_modalities(self._with_worklists(self.config()))
        config_path.write_text(json.dumps(config, indent=2))
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.binary, str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        deadline = began + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up:\n{self.log_tail()}")
            if self._answers():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Orthanc did not answer in time:\n{self.log_tail()}")
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def cleanup(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- REST helpers -------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get_json(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        status, payload = self.request("GET" if body is None else "POST", path, data)
        if status != 200:
            raise AssertionError(f"Orthanc {path} answered {status}: {payload[:200]!r}")
        return json.loads(payload)

    def _answers(self) -> bool:
        try:
            status, _ = self.request("GET", "/system")
        except OSError:
            return False
        return status == 200

    def instances(self) -> list[str]:
        return [str(i) for i in self.get_json("/instances")]

    def sop_uids(self) -> set[str]:
        found = self.get_json("/tools/find", {"Level": "Instance", "Query": {}, "Expand": True})
        return {str(item["MainDicomTags"]["SOPInstanceUID"]) for item in found}

    def instance_id(self, sop_uid: str) -> str:
        status, payload = self.request("POST", "/tools/lookup", sop_uid.encode())
        hits = (
            [h for h in json.loads(payload) if h.get("Type") == "Instance"] if status == 200 else []
        )
        if not hits:
            raise KeyError(sop_uid)
        return str(hits[0]["ID"])

    def file(self, sop_uid: str) -> bytes:
        status, payload = self.request("GET", f"/instances/{self.instance_id(sop_uid)}/file")
        if status != 200:
            raise AssertionError(f"Orthanc file of {sop_uid} answered {status}")
        return payload
