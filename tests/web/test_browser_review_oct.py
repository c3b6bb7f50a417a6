"""Headless Chromium, issue #16's review UI: an OCT volume sent by C-STORE to a served
appliance; the clinician opens the visit, reads the numbers and moves the B-scan slider with the
keyboard (each frame served, with the layers drawn, under the page's CSP)."""

from __future__ import annotations

import io
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from appliance.synth.oct.dicom import OptHeader
from tests.conftest import wait_for
from tests.pipeline.test_oct_pipeline import opt_bytes
from tests.web.test_browser_review_admin import _login, _wait, browser, served

__all__ = ["browser", "served"]  # the module's fixtures, shared


def _send_opt(port: int) -> None:
    header = OptHeader(patient_id="OCT-WEB-1", patient_name="Roe^Ann")
    ds = pydicom.dcmread(io.BytesIO(opt_bytes("R", thickening_um=0.0, header=header)))
    ae = AE(ae_title="OCTDEV")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCREENING")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()


def test_the_b_scan_slider(served: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    config = tomllib.loads((served["root"] / "appliance.toml").read_text())
    _send_opt(int(config["dicom_port"]))
    base, driver = served["base"], browser
    _login(driver, base, "chen", "/review")

    def opened() -> bool:
        driver.get(f"{base}/review")
        links = driver.find_elements(By.LINK_TEXT, "Roe, Ann")
        if not links:
            return False
        links[0].click()
        return bool(driver.find_elements(By.CSS_SELECTOR, "input[data-bscan-for]"))

    wait_for(opened, timeout=120)
    slider = driver.find_element(By.CSS_SELECTOR, "input[data-bscan-for]")
    assert slider.is_displayed()  # the script showed it
    cst = driver.find_element(By.CSS_SELECTOR, "[id^=oct-cst-]").text
    assert re.match(r"\d+ µm — threshold 300 µm for this device: under", cst), cst
    image = driver.find_element(By.ID, str(slider.get_attribute("data-bscan-for")))
    start = int(str(slider.get_attribute("value")))
    slider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    _wait(driver, lambda d: str(image.get_attribute("src")).endswith(f"/bscan/{start + 2}.png"))
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    assert _wait(driver, lambda d: d.execute_script(loaded, image)) == 256
    label = driver.find_element(By.CSS_SELECTOR, ".bscan-viewer output").text
    assert label == f"{start + 3} / 25"
    slider.send_keys(Keys.HOME)
    _wait(driver, lambda d: str(image.get_attribute("src")).endswith("/bscan/0.png"))
    assert _wait(driver, lambda d: d.execute_script(loaded, image)) == 256
    errors = [
        entry
        for entry in driver.get_log("browser")
        if entry.get("level") == "SEVERE" and "favicon" not in entry.get("message", "")
    ]
    assert errors == []  # no CSP refusal, no failed picture
    shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or served["root"])
    numbers = driver.find_element(By.CSS_SELECTOR, "[id^=oct-cst-]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", numbers)
    driver.save_screenshot(str(shots / "review-oct.png"))
