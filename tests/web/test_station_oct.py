"""The station shows an OCT's verdict line and its central B-scan with the layers drawn."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

from appliance.capture import Incoming
from appliance.config import Settings
from appliance.domain import Source
from appliance.runtime.services import Services
from appliance.synth.oct.dicom import OptHeader
from tests.conftest import wait_for
from tests.pipeline.test_heatmap_sc import MODELS
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.web.test_station import fragment, walk_in
from tests.web_helpers import logged_in


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(models_dir=str(MODELS))


def test_the_oct_verdict_and_b_scan_thumbnail(app: Any, services: Services) -> None:
    client = logged_in(app, services, "operator")
    assert walk_in(client).status_code == 302
    selection = services.station.current()
    assert selection is not None
    header = OptHeader(
        patient_id="WALK-1",
        patient_name="Lovelace^Ada",
        study_instance_uid=selection.study_instance_uid,
    )
    data = opt_bytes("L", thickening_um=120.0, header=header)
    services.ingestor.ingest(
        Incoming(data=data, source=Source.DICOM, user_id="ae:OCT", calling_ae="OCT")
    )
    shown = wait_for(
        lambda: (lambda f: 'class="oct-verdict"' in f and 'id="outcome"' in f and f)(
            fragment(client)
        ),
        timeout=60,
    )
    line = re.search(r'<p class="oct-verdict" id="oct-verdict-(\d+)">([^<]*)</p>', shown)
    assert line is not None
    assert re.fullmatch(
        r"OCT: central subfield \d+ µm — centre-involving macular oedema: yes "
        r"\(threshold 300 µm for this device\)",
        line.group(2),
    ), line.group(2)
    assert "Centre-involving diabetic macular oedema on OCT" in shown
    thumb = client.get(f"/station/captures/{line.group(1)}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(thumb.data)) as img:
        rgb = np.asarray(img.convert("RGB")).astype(int)
    assert max(rgb.shape[:2]) <= 320
    green = (rgb[:, :, 1] - rgb[:, :, 0] > 60) & (rgb[:, :, 1] - rgb[:, :, 2] > 60)
    magenta = (rgb[:, :, 0] - rgb[:, :, 1] > 60) & (rgb[:, :, 2] - rgb[:, :, 1] > 60)
    assert green.sum() > 50 and magenta.sum() > 50  # the ILM and RPE lines
    # beside the B-scan, the thickness map (thickened: red) with the ETDRS circles (white)
    right = rgb[:, int(rgb.shape[1] * 0.75) :]
    red = (right[:, :, 0] > 180) & (right[:, :, 1] < 110) & (right[:, :, 2] < 110)
    white = right.min(axis=2) > 225
    assert red.sum() > 100 and white.sum() > 20, (rgb.shape, red.sum(), white.sum())
