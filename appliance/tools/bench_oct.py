"""``appliance bench oct``: an OCT volume from C-STORE to stored result, as a site sees it.

Starts ``appliance serve`` as a separate process, sends synthetic macular volumes (49 B-scans
of 496 x 512, the Spectralis-like pattern, as uncompressed OPT objects) one at a time with a
pynetdicom C-STORE and waits for each stored result. Reports p50 / p95 end to end, the first
verdict (the first volume's result, cold), the stages each stored result times, the share
measured correctly against the generator's truth, and the service's peak RSS.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pynetdicom import AE

from appliance.synth.oct import GEOMETRIES, OctCase, draw_oct_case, render_oct
from appliance.synth.oct.dicom import OPT_SOP_CLASS, OptHeader, encode_opt, opt_dataset
from appliance.tools.bench_ingest import free_port
from appliance.tools.bench_screen import _peak_rss_mb

TARGETS = {"p95_s": 15.0, "first_verdict_s": 3.0, "rss_mb": 1024.0}


def _volumes(n: int, geometry: str, seed: int) -> list[tuple[OctCase, bytes]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[OctCase, bytes]] = []
    while len(out) < n:
        case = draw_oct_case(rng, GEOMETRIES[geometry])
        if case.defect is not None:
            continue
        rendered = render_oct(case)
        header = OptHeader(patient_id=f"BENCH-OCT-{len(out)}")
        ds = opt_dataset(rendered.volume, rendered.spacing_mm, case.eye, header)
        out.append((case, encode_opt(ds, "uncompressed")))
    return out


def _serve(data_dir: Path, dicom_port: int, web_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_WEB_PORT": str(web_port),
        "APPLIANCE_DICOM_PORT": str(dicom_port),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_MODEL_PROVIDERS": "CPUExecutionProvider",
        "APPLIANCE_MIN_FREE_DISK_MB": "0",
        "APPLIANCE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], env=env)
    started = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None or time.perf_counter() - started > 60:
                proc.terminate()
                raise RuntimeError("the service did not start") from None
            time.sleep(0.05)


def _store(port: int, data: bytes) -> None:
    ae = AE(ae_title="BENCHOCT")
    ae.add_requested_context(OPT_SOP_CLASS)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    if not assoc.is_established:
        raise RuntimeError("the appliance refused the association")
    try:
        status = assoc.send_c_store(dcmread(io.BytesIO(data)))
        if getattr(status, "Status", None) != 0:
            raise RuntimeError(f"C-STORE answered {status!r}")
    finally:
        assoc.release()


def _run(volumes: list[tuple[OctCase, bytes]], root: Path) -> dict[str, Any]:
    dicom_port, web_port = free_port(), free_port()
    proc = _serve(root / "data", dicom_port, web_port)
    latencies: list[float] = []
    stages: list[dict[str, float]] = []
    errors: list[float] = []
    try:
        db_path = root / "data" / "appliance.db"
        for case, data in volumes:
            sent = time.perf_counter()
            _store(dicom_port, data)
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            while db.execute("SELECT count(*) FROM results").fetchone()[0] <= len(latencies):
                time.sleep(0.01)
            latencies.append(time.perf_counter() - sent)
            row = db.execute("SELECT payload FROM results ORDER BY id DESC LIMIT 1").fetchone()
            db.close()
            record = json.loads(row[0])
            stages.append(record.get("timings_ms") or {})
            cst = ((record.get("oct") or {}).get("finding") or {}).get("cst_um")
            if cst is not None:
                errors.append(abs(float(cst) - case.cst_um))
        rss = _peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    keys = sorted({k for s in stages for k in s})
    return {
        "n": len(latencies),
        "first_verdict_s": round(latencies[0], 2),
        "p50_s": round(float(np.percentile(latencies, 50)), 2),
        "p95_s": round(float(np.percentile(latencies, 95)), 2),
        "max_s": round(max(latencies), 2),
        "stage_p50_ms": {
            k: round(float(np.median([s[k] for s in stages if k in s])), 1) for k in keys
        },  # fmt: skip
        "cst_mae_um": round(float(np.mean(errors)), 1) if errors else None,
        "cst_within_10um": f"{sum(e <= 10 for e in errors)}/{len(errors)}",
        "rss_mb": round(rss, 1),
        "cpus": os.cpu_count(),
    }


def bench_oct(n: int = 10, geometry: str = "spectralis49", seed: int = 1616,
              as_json: bool = False) -> int:  # fmt: skip
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}")
    volumes = _volumes(n, geometry, seed)
    with tempfile.TemporaryDirectory(prefix="bench-oct-") as tmp:
        result = _run(volumes, Path(tmp))
    g = GEOMETRIES[geometry]
    result["volume"] = f"{g.frames} B-scans of {g.rows} x {g.ascans}, uncompressed OPT"
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n} volumes ({result['volume']}), C-STORE → stored result, one at a time")
    print(
        f"first verdict {result['first_verdict_s']} s   p50 {result['p50_s']} s   "
        f"p95 {result['p95_s']} s   max {result['max_s']} s   peak RSS {result['rss_mb']} MB"
    )
    print(
        "stages (p50 ms): " + ", ".join(f"{k[:-3]} {v}" for k, v in result["stage_p50_ms"].items())
    )
    print(f"CST MAE {result['cst_mae_um']} µm; within 10 µm: {result['cst_within_10um']}")
    print("targets: p95 <= 15 s, first verdict <= 3 s, RSS <= 1024 MB (2 CPU cores)")
    return 0
