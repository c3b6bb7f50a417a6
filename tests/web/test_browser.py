"""End to end in headless Chromium: operator → clinician → admin, against a served appliance.

The appliance runs as its own process (`appliance serve`) with the shipped models; the worklist
comes from a real Orthanc (ModalityWorklists plugin) that is also the archive. Chromium is
driven through chromium-driver (Selenium). Screenshots of the main pages are written to
``$APPLIANCE_SCREENSHOTS`` when set (that is how docs/screenshots/ is made), else to a tmp dir.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.conftest import fundus, jpeg_bytes, require_tool
from tests.orthanc_server import Orthanc
from tests.web.served import REPO, chromium, serve, wait_until
from tests.web_helpers import PASSWORD

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PATIENT = ("E2E-0001", "Rivera^Ana", "19580412", "F")
SIGNER = ("Dr Chen Li", "MD, FRCOphth")
REFER = "Refer to an eye care professional"
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("e2e")
    worklists = root / "worklists"
    worklists.mkdir()
    _worklist_file(worklists, "SCREENING")
    orthanc = Orthanc(root / "orthanc", worklists=worklists).start()
    settings = (
        f'models_dir = "{REPO / "models"}"\n'
        'worklist_host = "127.0.0.1"\n'
        f"worklist_port = {orthanc.dicom_port}\n"
        f'worklist_ae_title = "{orthanc.aet}"\n'
        "[[destinations]]\n"
        'name = "archive"\n'
        'host = "127.0.0.1"\n'
        f"port = {orthanc.dicom_port}\n"
        f'ae_title = "{orthanc.aet}"\n'
    )
    signer = ("--full-name", SIGNER[0], "--credentials", SIGNER[1])
    users = [("olivia", "operator", ()), ("chen", "clinician", signer), ("ada", "admin", ())]
    try:
        with serve(root, settings, users) as app:
            photos = {}
            for eye, seed in (("R", 11), ("L", 12)):
                path = root / f"photo-{eye}.jpg"
                image = fundus(seed=seed, size=(1536, 2048), eye=eye)
                path.write_bytes(jpeg_bytes(image, quality=92))
                photos[eye] = path
            shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or root / "shots")
            shots.mkdir(parents=True, exist_ok=True)
            yield {
                "base": app.base, "photos": photos, "shots": shots, "orthanc": orthanc,
                "root": root,
            }  # fmt: skip
    finally:
        orthanc.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium("--force-device-scale-factor=1") as driver:
        yield driver


def _wait(driver: Any, predicate: Any, timeout: float = WAIT) -> Any:
    return wait_until(driver, predicate, timeout)


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
          or "again" in d.find_element(By.ID, "outcome").text.lower()
          or "human grading" in d.find_element(By.ID, "outcome").text.lower())  # fmt: skip
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
    Select(form.find_element(By.NAME, "outcome_code")).select_by_value("refer")
    form.find_element(By.NAME, "reason").send_keys("Haemorrhage seen nasally on the right.")
    meaning = form.find_element(By.ID, "signature-meaning").text
    assert "reviewed and overridden" in meaning and "Dr Chen Li, MD, FRCOphth" in meaning
    form.find_element(By.NAME, "password").send_keys(PASSWORD)
    form.find_element(By.XPATH, ".//button[normalize-space()='Sign']").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "last-review"))
    assert "Dr Chen Li, MD, FRCOphth" in driver.find_element(By.ID, "last-review").text
    statuses = [
        r.get_attribute("data-status")
        for r in driver.find_elements(By.CSS_SELECTOR, "#versions tr.version")
    ]
    assert statuses.count("signed") == 2, statuses  # the signed SR and PDF, next to the others
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


def _archived(orthanc: Orthanc) -> dict[str, pydicom.Dataset]:
    """Everything in the archive, by SOP Instance UID."""
    return {uid: pydicom.dcmread(io.BytesIO(orthanc.file(uid))) for uid in orthanc.sop_uids()}


def _signed_pair(orthanc: Orthanc) -> tuple[pydicom.Dataset, pydicom.Dataset] | None:
    found = _archived(orthanc).values()
    verified = [ds for ds in found if ds.get("VerificationFlag") == "VERIFIED"]
    pdf = next((ds for ds in verified if ds.SOPClassUID == ENCAPSULATED_PDF), None)
    sr = next((ds for ds in verified if ds.SOPClassUID == COMPREHENSIVE_3D_SR), None)
    return (pdf, sr) if pdf is not None and sr is not None else None


def _check_dicom(ds: pydicom.Dataset, folder: Path) -> None:
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def _check_signed_pdf(pdf: bytes, folder: Path) -> None:
    """Fonts embedded, every page identified, the signer and the decision printed."""
    path = folder / "signed.pdf"
    path.write_bytes(pdf)
    fonts = subprocess.run(
        [require_tool("pdffonts"), str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[2:]
    assert fonts and all(line.split()[-5] == "yes" for line in fonts), fonts  # "emb" column
    text = subprocess.run(
        [require_tool("pdftotext"), "-layout", str(path), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pages = [page for page in text.split("\f") if page.strip()]
    for number, page in enumerate(pages, 1):
        assert f"Page {number} of {len(pages)}" in page and PATIENT[0] in page
        assert "Signed" in page and "Preliminary" not in page
    flat = " ".join(text.split())
    for words in (SIGNER[0], SIGNER[1], "reviewed and overridden", REFER):
        assert words in flat, words


def test_the_signed_report_reaches_the_archive_and_the_station(
    site: dict[str, Any], browser: Any
) -> None:
    """After the override above: signed PDF + VERIFIED SR in Orthanc, valid, replacing the
    preliminary ones; the station shows the signed decision and prints the signed PDF."""
    from selenium.webdriver.common.by import By

    base, driver, orthanc = site["base"], browser, site["orthanc"]
    pair = _wait_for(lambda: _signed_pair(orthanc))
    pdf, sr = pair
    archived = _archived(orthanc)
    for ds in (pdf, sr):
        _check_dicom(ds, site["root"])
        replaced = {
            ref.ReferencedSOPInstanceUID
            for study in ds.PredecessorDocumentsSequence
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence
        }
        assert replaced and replaced <= set(archived)  # the preliminary one, archived too
        assert all(archived[uid].SOPClassUID == ds.SOPClassUID for uid in replaced)
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Li^Chen^^Dr"
    length = int(pdf.EncapsulatedDocumentLength)
    signed = bytes(pdf.EncapsulatedDocument[:length])
    _check_signed_pdf(signed, site["root"])

    _login(driver, base, "olivia")
    line = _wait(driver, lambda d: (el := d.find_elements(By.ID, "signed-decision")) and el[0])
    assert f"Signed by {SIGNER[0]}, {SIGNER[1]} \u2014 {REFER}" in line.text
    href = driver.find_element(By.ID, "report-print").get_attribute("href")
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
    request = urllib.request.Request(href, headers={"Cookie": cookies})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == signed  # the station prints the signed report
    _shot(driver, site, "station-signed")
    _logout(driver)


def _wait_for(predicate: Any, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.5)
    return found
