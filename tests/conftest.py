"""Shared fixtures: fresh data directory per test, real services on per-test ports."""

from __future__ import annotations

import io
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance import config
from appliance.config import Settings
from appliance.dicom.op import OPParameters, new_uid, op_from_jpeg, to_bytes
from appliance.domain import PatientInfo

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
API_TOKEN = "test-token-0123456789"


def require_tool(name: str) -> str:
    """The path of an external program; skip without it locally, fail without it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run lists the Debian packages that provide it)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until ``predicate`` returns something truthy (bounded; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def fundus(seed: int = 1, size: tuple[int, int] = (768, 1024), eye: str = "R") -> np.ndarray:
    from appliance.synth import make_fundus

    return make_fundus(seed=seed, size=size, eye=eye)


def op_bytes(
    rgb: np.ndarray | None = None,
    *,
    laterality: str = "R",
    patient_id: str = "PAT001",
    sop_instance_uid: str | None = None,
    study_instance_uid: str | None = None,
) -> bytes:
    rgb = fundus() if rgb is None else rgb
    params = OPParameters(
        laterality=laterality,
        patient=PatientInfo(
            patient_id=patient_id, patient_name="Test^Patient", birth_date="19600101", sex="F"
        ),
        study_instance_uid=study_instance_uid or new_uid(),
        series_instance_uid=new_uid(),
        sop_instance_uid=sop_instance_uid or new_uid(),
        field="macula",
    )
    return to_bytes(op_from_jpeg(jpeg_bytes(rgb), params))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return config.load(
        environ={},
        data_dir=str(tmp_path / "var"),
        dicom_host="127.0.0.1",
        dicom_port=free_port(),
        min_free_disk_mb=0,
        api_token=API_TOKEN,
        hotfolder_stable_seconds=0.3,
        hotfolder_poll_seconds=0.05,
        upload_max_bytes=8 * 1024 * 1024,
        dicom_acse_timeout=5,
        dicom_dimse_timeout=10,
        dicom_network_timeout=10,
        models_dir=str(tmp_path / "no-models"),  # tests that need the shipped models say so
        # the demonstration models are qualified on no camera; tests of camera qualification
        # turn this on (tests/pipeline/test_cameras.py)
        camera_qualification_required=False,
    )


@pytest.fixture
def services(settings: Settings) -> Iterator[Any]:
    from appliance.runtime.services import Services

    svc = Services(settings)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def app(settings: Settings, services: Any) -> Any:
    from web import create_app

    return create_app(settings, services)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def outside_files(root: Path, data_dir: Path) -> list[Path]:
    """Files under ``root`` that are not inside ``data_dir`` (for 'nothing written outside')."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and not p.resolve().is_relative_to(data_dir.resolve())
    ]
