"""``appliance bench screen``: capture-to-result latency of a running service, as a site sees it.

Starts ``appliance serve`` as a separate process (cold start to a ready ``/healthz``), uploads
~2 MP camera JPEGs one at a time through ``POST /api/captures`` and waits for each stored result,
for the INT8 models and then the FP32 ones, in one run. Reports p50/p95 end to end and per stage
(from the timings each stored result carries), the INT8 speed-up, and the service's peak RSS.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from appliance.tools.bench_ingest import free_port

TOKEN = "bench-" + uuid.uuid4().hex


def _photos(n: int, size: tuple[int, int]) -> list[bytes]:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    photos: list[bytes] = []
    index = 0
    while len(photos) < n:
        case = case_for(8080, index, size)
        index += 1
        if case.defect is not None:
            continue
        buffer = io.BytesIO()
        Image.fromarray(render_case(case)).save(buffer, "JPEG", quality=92)
        photos.append(buffer.getvalue())
    return photos


def _upload(url: str, jpeg: bytes, eye: str) -> int:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="laterality"\r\n\r\n{eye}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "/api/captures",
        data=body,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.loads(response.read())["id"])


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run(variant: str, photos: list[bytes], root: Path) -> dict[str, Any]:
    data_dir = root / variant
    web_port = free_port()
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "APPLIANCE_WEB_PORT": str(web_port),
        "APPLIANCE_DICOM_PORT": str(free_port()),
        "APPLIANCE_DICOM_HOST": "127.0.0.1",
        "APPLIANCE_API_TOKEN": TOKEN,
        "APPLIANCE_MODEL_VARIANT": variant,
        "APPLIANCE_MODEL_PROVIDERS": "CPUExecutionProvider",
        "APPLIANCE_MIN_FREE_DISK_MB": "0",
        "APPLIANCE_LOG_LEVEL": "WARNING",
    }
    url = f"http://127.0.0.1:{web_port}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve"], env=env)
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - started > 60:
                    raise RuntimeError("the service did not start") from None
                time.sleep(0.02)
        ready_s = time.perf_counter() - started
        if health["screening_model"] != "installed":
            raise RuntimeError(f"models not loaded: {health['screening_model']}")
        db = sqlite3.connect(f"file:{data_dir / 'appliance.db'}?mode=ro", uri=True)
        latencies, stages = [], []
        for index, jpeg in enumerate(photos):
            sent = time.perf_counter()
            capture_id = _upload(url, jpeg, "LR"[index % 2])
            while True:
                row = db.execute(
                    "SELECT payload FROM results WHERE capture_pk = ?", (capture_id,)
                ).fetchone()
                if row:
                    break
                time.sleep(0.002)
            latencies.append((time.perf_counter() - sent) * 1000)
            stages.append(json.loads(row[0])["timings_ms"])
        rss = _peak_rss_mb(proc.pid)
        db.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    warm = latencies[2:] if len(latencies) > 4 else latencies  # first requests warm caches
    per_stage = {
        key: round(statistics.median(s[key] for s in stages[2:] if key in s), 2)
        for key in sorted({k for s in stages for k in s})
    }
    return {
        "variant": variant,
        "n": len(warm),
        "p50_ms": round(float(np.percentile(warm, 50)), 1),
        "p95_ms": round(float(np.percentile(warm, 95)), 1),
        "stage_p50_ms": per_stage,
        "rss_mb": round(rss, 1),
        "ready_s": round(ready_s, 2),
        "providers": sorted({m["provider"] for m in health["models"]}),
    }


def bench_screen(n: int = 30, size: tuple[int, int] = (1224, 1632), as_json: bool = False) -> int:
    photos = _photos(n, size)
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        runs = {variant: _run(variant, photos, Path(tmp)) for variant in ("int8", "fp32")}
    int8, fp32 = runs["int8"], runs["fp32"]
    model_keys = [
        k for k in int8["stage_p50_ms"] if k in ("gradability_ms", "dr_ms", "glaucoma_ms")
    ]
    int8_models = sum(int8["stage_p50_ms"][k] for k in model_keys)
    fp32_models = sum(fp32["stage_p50_ms"].get(k, 0) for k in model_keys)
    summary = {
        "photos": n,
        "size": f"{size[1]}x{size[0]} JPEG",
        "cpu_threads_per_model": 2,
        "p50_ms": int8["p50_ms"],
        "p95_ms": int8["p95_ms"],
        "rss_mb": int8["rss_mb"],
        "ready_s": int8["ready_s"],
        "int8_speedup": round(fp32_models / int8_models, 2) if int8_models else None,
        "int8_speedup_end_to_end": round(fp32["p50_ms"] / int8["p50_ms"], 2),
        "runs": runs,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{n} photos, {summary['size']}, CPU provider, upload → stored result, one at a time")
    for run in (int8, fp32):
        print(
            f"{run['variant']:>5}: p50 {run['p50_ms']:7.1f} ms   p95 {run['p95_ms']:7.1f} ms   "
            f"peak RSS {run['rss_mb']:6.1f} MB   ready {run['ready_s']:.2f} s"
        )
        print(
            "       stages (p50 ms): "
            + ", ".join(f"{k[:-3]} {v}" for k, v in run["stage_p50_ms"].items())
        )
    print(
        f"INT8 speed-up, models only: {summary['int8_speedup']}x; "
        f"end to end: {summary['int8_speedup_end_to_end']}x"
    )
    print("targets: p95 <= 500 ms, RSS <= 600 MB, ready <= 5 s")
    return 0
