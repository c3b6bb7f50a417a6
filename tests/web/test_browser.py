"""End to end in headless Chromium: operator → clinician → admin, against a served appliance.

The appliance runs as its own process (`appliance serve`) with the shipped models; the worklist
comes from a real Orthanc (ModalityWorklists plugin) that is also the archive. Chromium is
driven through chromium-driver (Selenium). Screenshots of the main pages are written to
``$APPLIANCE_SCREENSHOTS`` when set (that is how docs/screenshots/ is made), else to a tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import free_port, fundus, jpeg_bytes, require_tool
from tests.orthanc_server import Orthanc
from tests.web_helpers import PASSWORD

REPO = Path(__file__).resolve().parents[2]
PATIENT = ("E2E-0001", "Rivera^Ana", "19580412", "F")
WAIT = 90.0


def _worklist_file(folder: Path, station_ae: str) -> None:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = PATIENT
    ds.IssuerOfPatientID = "CLINIC"
    ds.AccessionNumber = "ACC-E2E-1"
    ds.RequestedProcedureID = "RP-E2E"
    ds.StudyInstanceUID = generate_uid()
    step = Dataset()
    step.ScheduledStationAETitle = station_ae
    step.ScheduledProcedureStepStartDate = date.today().strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = "0900"
    step.Modality = "OP"
    step.ScheduledProcedureStepID = "SPS-E2E"
    step.ScheduledProcedureStepDescription = "Diabetic eye screening"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(folder / "e2e.wl", enforce_file_format=True)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("e2e")
    worklists = root / "worklists"
    worklists.mkdir()
    _worklist_file(worklists, "SCREENING")
    orthanc = Orthanc(root / "orthanc", worklists=worklists).start()
    web_port = free_port()
    config = root / "appliance.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        f'models_dir = "{REPO / "models"}"\n'
        f"web_port = {web_port}\n"
        'dicom_host = "127.0.0.1"\n'
        f"dicom_port = {free_port()}\n"
        "min_free_disk_mb = 0\n"
        'worklist_host = "127.0.0.1"\n'
        f"worklist_port = {orthanc.dicom_port}\n"
        f'worklist_ae_title = "{orthanc.aet}"\n'
        "[[destinations]]\n"
        'name = "archive"\n'
        'host = "127.0.0.1"\n'
        f"port = {orthanc.dicom_port}\n"
        f'ae_title = "{orthanc.aet}"\n'
    )
    env = {**os.environ, "APPLIANCE_CONFIG": str(config)}
    cli = [sys.executable, "-m", "appliance.cli"]
    for name, role in (("olivia", "operator"), ("chen", "clinician"), ("ada", "admin")):
        subprocess.run(
            [*cli, "users", "add", name, "--role", role],
            input=PASSWORD + "\n",
            text=True,
            env=env,
            check=True,
            capture_output=True,
        )
    log = (root / "serve.log").open("wb")
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            _get(f"{base}/healthz")
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((root / "serve.log").read_text()[-3000:]) from None
            time.sleep(0.2)
    photos = {}
    for eye, seed in (("R", 11), ("L", 12)):
        path = root / f"photo-{eye}.jpg"
        path.write_bytes(jpeg_bytes(fundus(seed=seed, size=(1536, 2048), eye=eye), quality=92))
        photos[eye] = path
    shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or root / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield {"base": base, "photos": photos, "shots": shots, "orthanc": orthanc, "root": root}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        orthanc.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, predicate: Any, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(predicate)
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"gave up waiting at {driver.current_url}:\n{page[:3000]}") from None


def _login(driver: Any, base: str, name: str) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{base}/login")
    # keyboard only: the name field has focus, Tab reaches the password, Enter logs in. The
    # browser applies autofocus after the load event, so wait for it (bounded) instead of
    # catching it the instant get() returns (on a loaded machine it was not there yet).
    _wait(driver, lambda d: d.switch_to.active_element.get_attribute("name") == "username")
    driver.switch_to.active_element.send_keys(name, Keys.TAB, PASSWORD, Keys.ENTER)
    _wait(driver, lambda d: "/login" not in d.current_url)


def _logout(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "form.who button[type=submit]").click()
    _wait(driver, lambda d: "/login" in d.current_url)


def _shot(driver: Any, site: dict[str, Any], name: str) -> None:
    driver.save_screenshot(str(site["shots"] / f"{name}.png"))


def test_operator_then_clinician_then_admin(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, driver = site["base"], browser
    driver.get(f"{base}/login")
    _shot(driver, site, "login")

    # -- operator: worklist patient, one photo per eye, verdicts and outcome arrive live ----
    _login(driver, base, "olivia")
    assert driver.current_url.endswith("/station")
    row = _wait(
        driver,
        lambda d: next(
            (r for r in d.find_elements(By.CSS_SELECTOR, "tr") if PATIENT[0] in r.text), None
        ),
    )
    row.find_element(By.XPATH, ".//button[normalize-space()='Choose']").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[data-upload]"))
    driver.execute_script("window.__sameDocument = 'yes';")
    for eye in ("R", "L"):
        form = driver.find_element(By.CSS_SELECTOR, "form[data-upload]")
        Select(form.find_element(By.NAME, "laterality")).select_by_value(eye)
        form.find_element(By.NAME, "file").send_keys(str(site["photos"][eye]))
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(driver, lambda d: "Received" in d.find_element(By.CSS_SELECTOR, "[data-status]").text)
    _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#visit .capture")) == 2)
    _wait(driver, lambda d: "Checking" not in d.find_element(By.ID, "visit").text)
    outcome = _wait(
        driver,
        lambda d: (el := d.find_element(By.ID, "outcome")).text.strip() and el,
    )
    _wait(driver, lambda d: "refer" in d.find_element(By.ID, "outcome").text.lower()
          or "rescreen" in d.find_element(By.ID, "outcome").text.lower()
          or "again" in d.find_element(By.ID, "outcome").text.lower())  # fmt: skip
    assert driver.execute_script("return window.__sameDocument;") == "yes"  # no reload
    captures = driver.find_elements(By.CSS_SELECTOR, "#visit .capture")
    assert all(c.find_elements(By.TAG_NAME, "img") for c in captures)
    assert outcome.text
    driver.execute_script("window.scrollTo(0, 0);")
    _shot(driver, site, "station")
    _logout(driver)

    # -- clinician: open the visit, see the heatmap, override with a reason -----------------
    _login(driver, base, "chen")
    driver.get(f"{base}/review")
    _shot(driver, site, "review-list")
    driver.find_element(By.CSS_SELECTOR, "#visits a").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "decision"))
    toggle = driver.find_elements(By.CSS_SELECTOR, "[data-toggle-overlay]")
    assert toggle, "no heatmap toggle"
    overlay = driver.find_element(By.ID, toggle[0].get_attribute("data-toggle-overlay"))
    before = overlay.is_displayed()
    toggle[0].click()
    assert overlay.is_displayed() != before
    _shot(driver, site, "review-visit")
    form = driver.find_element(By.ID, "decision")
    form.find_element(By.CSS_SELECTOR, "input[name=decision][value=override]").click()
    Select(form.find_element(By.NAME, "outcome_code")).select_by_index(1)
    form.find_element(By.NAME, "reason").send_keys("Haemorrhage seen nasally on the right.")
    form.find_element(By.XPATH, ".//button[normalize-space()='Sign']").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "last-review"))
    assert "chen" in driver.find_element(By.ID, "last-review").text
    _logout(driver)

    # -- admin: the audit trail shows who saw what ----------------------------------------------
    _login(driver, base, "ada")
    driver.get(f"{base}/admin/audit")
    table = _wait(driver, lambda d: d.find_element(By.ID, "audit-events"))
    text = table.text
    assert "110103" in text and "olivia" in text and "chen" in text
    _shot(driver, site, "admin-audit")
    for page in ("outbox", "models", "monitoring"):
        driver.get(f"{base}/admin/{page}")
        assert driver.find_elements(By.TAG_NAME, "h1")
        _shot(driver, site, f"admin-{page}")
    driver.get(f"{base}/admin")
    _shot(driver, site, "admin")
    _logout(driver)
