"""``appliance bench forward``: the outbox's sending rate against dcmtk's ``storescu``.

The same OP files (camera-sized JPEG wrapped as Ophthalmic Photography) go to the same Orthanc
over C-STORE, in the same run: through the outbox (jobs in SQLite → ``Forwarder`` leases a
batch → ``DimseTarget`` sends it over an association → the answers and their 110104 audit
events are committed in one transaction per batch; two such lanes at once, the default), through
the outbox with a single lane, and with ``storescu`` (one association, no bookkeeping). Orthanc
and dcmtk run with ``TCP_NODELAY=1``; Orthanc is emptied before each send; the rounds alternate
the order. Prints instances/s for each and the ratios.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from appliance.audit import AuditTrail
from appliance.outbox import queue
from appliance.outbox.dimse import DimseTarget
from appliance.outbox.worker import Forwarder
from appliance.store import BlobStore, Store
from appliance.tools.bench_ingest import free_port, make_op_files

_DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk otherwise stalls on delayed ACKs


def dcmtk_storescu() -> str | None:
    """dcmtk's ``storescu`` (pynetdicom installs a different program under the same name)."""
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]:
        candidate = Path(folder) / "storescu"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        try:
            run = subprocess.run(
                [str(candidate), "--version"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (run.stdout + run.stderr).lower():
            return str(candidate)
    return None


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None
    )


class _Orthanc:
    """Orthanc on loopback ports with its own storage; its REST API to count and empty it."""

    def __init__(self, binary: str, root: Path) -> None:
        self.root = root
        self.dicom_port, self.http_port = free_port(), free_port()
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench-forward",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "Plugins": [],
            "SaveJobs": False,
        }
        (root / "orthanc.json").write_text(json.dumps(config, indent=2))
        with (root / "orthanc.log").open("ab") as log:
            self.process = subprocess.Popen(
                [binary, str(root / "orthanc.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=root,
                env=_DCMTK_ENV,  # Orthanc's DICOM layer is dcmtk
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.version = str(self._get("/system")["Version"])
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    where = root / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start; see {where}") from None
                time.sleep(0.05)

    def _request(self, method: str, path: str) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=60)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"Orthanc {method} {path} answered {response.status}")
            return body
        finally:
            connection.close()

    def _get(self, path: str) -> dict[str, object]:
        return dict(json.loads(self._request("GET", path)))

    def count(self) -> int:
        return int(str(self._get("/statistics")["CountInstances"]))

    def empty(self) -> None:
        for patient in json.loads(self._request("GET", "/patients")):
            self._request("DELETE", f"/patients/{patient}")
        if self.count():
            raise RuntimeError("Orthanc could not be emptied")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _storescu_time(storescu: str, files: list[Path], archive: _Orthanc) -> float:
    started = time.perf_counter()
    subprocess.run(
        [storescu, "-xy", "-aec", "ORTHANC", "-aet", "SCREENING", "127.0.0.1"]
        + [str(archive.dicom_port), *map(str, files)],
        check=True,
        capture_output=True,
        env=_DCMTK_ENV,
    )
    return time.perf_counter() - started


def _outbox_time(files: list[Path], archive: _Orthanc, data_dir: Path, lanes: int = 2) -> float:
    """Jobs queued as the pipeline queues them; timed from the first lease to the last ack."""
    store = Store(data_dir / "appliance.db")
    blobs = BlobStore(data_dir)
    audit = AuditTrail(store, data_dir / "audit.head")
    target = DimseTarget(
        "bench", "127.0.0.1", archive.dicom_port, "ORTHANC", "SCREENING", 30.0, lanes
    )
    forwarder = Forwarder(store, blobs, audit, [target])
    try:
        with store.write() as tx:
            for path in files:
                queue.enqueue(
                    tx,
                    kind="received",
                    destination=target.name,
                    sop_instance_uid=str(read_file_meta_info(path).MediaStorageSOPInstanceUID),
                    file_path=blobs.put(path.read_bytes(), "application/dicom"),
                    study=None,
                )
        started = time.perf_counter()
        while forwarder.pass_once():
            pass
        elapsed = time.perf_counter() - started
        delivered = store.scalar("SELECT count(*) FROM outbox_jobs WHERE state = 'delivered'")
        if delivered != len(files):
            states = store.query(
                "SELECT state, last_status, last_error, count(*) AS n FROM outbox_jobs "
                "WHERE state != 'delivered' GROUP BY state, last_status, last_error"
            )
            raise RuntimeError(f"the outbox delivered {delivered} of {len(files)} files: {states}")
        return elapsed
    finally:
        store.close()


def bench_forward(n: int = 50, width: int = 1632, height: int = 1224, rounds: int = 3) -> int:
    storescu, orthanc = dcmtk_storescu(), orthanc_binary()
    if storescu is None:
        print("storescu (dcmtk) is needed as the peer: apt-get install dcmtk")
        return 2
    if orthanc is None:
        print("Orthanc is needed as the archive: apt-get install orthanc")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as tmp:
        root = Path(tmp)
        files = make_op_files(root / "files", n, width, height)
        mean_size = sum(f.stat().st_size for f in files) / len(files)
        archive = _Orthanc(orthanc, root / "orthanc")
        try:
            print(
                f"{n} OP files, {width}x{height} JPEG, mean {mean_size / 1e6:.2f} MB; "
                f"{rounds} rounds; Orthanc {archive.version} over C-STORE on loopback"
            )
            times: dict[str, list[float]] = {"outbox": [], "single": [], "storescu": []}
            for round_no in range(rounds):
                order = list(times) if round_no % 2 == 0 else list(reversed(times))
                for which in order:
                    archive.empty()
                    data_dir = root / f"{which}{round_no}"
                    if which == "outbox":
                        times[which].append(_outbox_time(files, archive, data_dir))
                    elif which == "single":
                        times[which].append(_outbox_time(files, archive, data_dir, 1))
                    else:
                        times[which].append(_storescu_time(storescu, files, archive))
                    if archive.count() != n:
                        raise RuntimeError(f"{which}: Orthanc holds {archive.count()} of {n}")
        finally:
            archive.stop()
    ours, single, theirs = (n / min(times[k]) for k in ("outbox", "single", "storescu"))
    print(f"outbox, 2 associations (default):   {ours:8.1f} instances/s (best of {rounds})")
    print(f"outbox, 1 association:              {single:8.1f} instances/s (best of {rounds})")
    print(f"dcmtk storescu, 1 association:      {theirs:8.1f} instances/s (best of {rounds})")
    print(f"ratio outbox / storescu:            {ours / theirs:8.2f}  (target >= 0.8)")
    print(f"ratio outbox, 1 association / storescu: {single / theirs:4.2f}")
    return 0
