"""``appliance bench``: figures a site can reproduce on its own device.

``bench ingest`` sends the same OP files (camera-sized JPEG wrapped as Ophthalmic Photography)
with dcmtk's ``storescu`` to the appliance's SCP (storing + auditing) and to dcmtk's own
``storescp`` (writing files), in the same run, and prints instances/s for each and the ratio.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from appliance import config
from appliance.dicom.op import OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.domain import PatientInfo

_DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_op_files(folder: Path, n: int, width: int, height: int) -> list[Path]:
    from appliance.synth import make_fundus

    folder.mkdir(parents=True, exist_ok=True)
    study = new_uid()
    files = []
    for index in range(n):
        rgb = make_fundus(seed=index, size=(height, width), eye="R" if index % 2 else "L")
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(rgb)).save(buffer, "JPEG", quality=92)
        params = OPParameters(
            laterality="R" if index % 2 else "L",
            patient=PatientInfo(patient_id=f"BENCH{index // 2:04d}", patient_name="Bench^Patient"),
            study_instance_uid=study,
            series_instance_uid=new_uid(),
            sop_instance_uid=new_uid(),
            field="macula",
        )
        path = folder / f"op{index:04d}.dcm"
        path.write_bytes(to_bytes(op_from_jpeg(buffer.getvalue(), params)))
        files.append(path)
    return files


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def _send(files: list[Path], port: int, ae_title: str) -> float:
    started = time.perf_counter()
    subprocess.run(  # TCP_NODELAY: dcmtk otherwise stalls on delayed ACKs (~40 ms per image)
        [
            "storescu",
            "-xy",
            "-aec",
            ae_title,
            "-aet",
            "BENCH",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        check=True,
        capture_output=True,
        env=_DCMTK_ENV,
    )
    return time.perf_counter() - started


def _noop_scp_time(files: list[Path]) -> float:
    """The same transport with a handler that stores nothing: pynetdicom's own ceiling."""
    from pynetdicom import AE, evt
    from pynetdicom.presentation import StoragePresentationContexts

    from appliance.capture.scp import DUL_POLL_SECONDS, TRANSFER_SYNTAXES

    ae = AE(ae_title="NOOP")
    for context in StoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)

    def fast_poll(event: evt.Event) -> None:
        event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS

    port = free_port()
    handlers: list[Any] = [(evt.EVT_C_STORE, lambda event: 0x0000), (evt.EVT_CONN_OPEN, fast_poll)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    assert server is not None
    try:
        return _send(files, port, "NOOP")
    finally:
        server.shutdown()


def bench_ingest(n: int = 50, width: int = 1632, height: int = 1224, rounds: int = 3) -> int:
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            print(f"{tool} (dcmtk) is needed as the peer: apt-get install dcmtk")
            return 2
    from appliance.runtime.services import Services

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        files = make_op_files(root / "files", n, width, height)
        mean_size = sum(f.stat().st_size for f in files) / len(files)
        print(
            f"{n} OP files, {width}x{height} JPEG, mean {mean_size / 1e6:.2f} MB; {rounds} rounds"
        )
        appliance_times, dcmtk_times, noop_times = [], [], []
        for round_no in range(rounds):
            noop_times.append(_noop_scp_time(files))
            port = free_port()
            settings = config.load(
                environ={},
                data_dir=str(root / f"appliance{round_no}"),
                dicom_host="127.0.0.1",
                dicom_port=port,
                min_free_disk_mb=0,
            )
            services = Services(settings)
            services.start(hotfolder=False, worker=False)  # measure storing + auditing only
            try:
                _wait_port(port)
                appliance_times.append(_send(files, port, settings.dicom_ae_title))
            finally:
                services.stop()
            out = root / f"storescp{round_no}"
            out.mkdir()
            port = free_port()
            proc = subprocess.Popen(
                ["storescp", "+xa", "-od", str(out), "-aet", "STORESCP", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_DCMTK_ENV,
            )
            try:
                _wait_port(port)
                dcmtk_times.append(_send(files, port, "STORESCP"))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        ours = n / min(appliance_times)
        theirs = n / min(dcmtk_times)
        ceiling = n / min(noop_times)
        print(f"appliance SCP (store + audit): {ours:8.1f} instances/s (best of {rounds})")
        print(f"dcmtk storescp (files only):   {theirs:8.1f} instances/s (best of {rounds})")
        print(f"pynetdicom no-op SCP:          {ceiling:8.1f} instances/s (transport ceiling)")
        print(f"ratio no-op pynetdicom / storescp: {ceiling / theirs:4.2f}")
        print(f"ratio appliance / storescp:    {ours / theirs:8.2f}  (target >= 0.5)")
    return 0
