"""Headless Chromium: a mislabelled photograph at the station. A left eye uploaded as "Right eye
(OD)" counts for neither eye; the station shows the conflict with both choices; the operator
uses the detected eye and the checklist, the outcome and the photo's line say what is true.

A served appliance (``appliance serve``, shipped models, a walk-in patient); no archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import jpeg_bytes
from tests.web.served import REPO, chromium, serve, wait_until
from tests.web_helpers import PASSWORD

WAIT = 120.0
CONFLICT = "the photograph labelled Right (OD) looks like a left eye"


def _photo(eye: str) -> Any:
    from appliance.synth.case import render_case
    from appliance.synth.dataset import case_for

    case = next(
        c for c in (case_for(6160, i, (600, 800)) for i in range(200))
        if c.eye == eye and c.field == "macula" and c.defect is None
    )  # fmt: skip
    return render_case(case)


@contextmanager
def shipped_models_app(
    root: Path, users: Sequence[tuple[str, str, Sequence[str]]]
) -> Iterator[dict[str, Any]]:
    """A served appliance with the shipped models (cameras need no qualification) and a
    right- and a left-eye photograph to upload."""
    settings = f'models_dir = "{REPO / "models"}"\ncamera_qualification_required = false\n'
    with serve(root, settings, users) as app:
        photos = {}
        for eye in ("R", "L"):
            photos[eye] = root / f"photo-{eye}.jpg"
            photos[eye].write_bytes(jpeg_bytes(_photo(eye), quality=92))
        yield {"base": app.base, "photos": photos, "root": root}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with shipped_models_app(
        tmp_path_factory.mktemp("eyelabel"), [("olivia", "operator", ())]
    ) as app:
        yield app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _wait(driver: Any, predicate: Any, timeout: float = WAIT) -> Any:
    return wait_until(driver, predicate, timeout)


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def test_mislabelled_photo_is_shown_decided_and_counted_right(
    served: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, driver = served["base"], browser
    driver.get(f"{base}/login")
    _wait(driver, lambda d: d.find_elements(By.NAME, "username"))
    driver.find_element(By.NAME, "username").send_keys("olivia")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url.endswith("/station"))

    walk_in = driver.find_element(By.ID, "walk-in")
    walk_in.find_element(By.NAME, "patient_id").send_keys("EYE-WEB-1")
    walk_in.find_element(By.NAME, "family_name").send_keys("Label")
    driver.execute_script("document.getElementById('walk-in-birth-date').value = '1961-02-03';")
    walk_in.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[data-upload]"))

    # the right eye as right, then a LEFT eye photograph uploaded as "Right eye (OD)"
    for photo in ("R", "L"):
        form = driver.find_element(By.CSS_SELECTOR, "form[data-upload]")
        Select(form.find_element(By.NAME, "laterality")).select_by_value("R")
        form.find_element(By.NAME, "file").send_keys(str(served["photos"][photo]))
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(driver, lambda d: "Received" in d.find_element(By.CSS_SELECTOR, "[data-status]").text)

    # the conflict: both choices shown; the left eye is not counted; the prompt says which way
    conflict = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eye-conflict"))[0]
    assert "Right eye (OD)" in conflict.text and "left eye" in conflict.text
    capture = conflict.get_attribute("id").removeprefix("eye-conflict-")
    _wait(driver, lambda d: CONFLICT in _text(d, "visit"))
    checklist = driver.find_element(By.ID, "checklist").text
    assert "Left eye: not counted" in checklist
    assert "Right eye: done" in checklist
    assert driver.find_element(By.ID, "outcome").get_attribute("data-code") != "rescreen"
    shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or served["root"])
    driver.save_screenshot(str(shots / "station-eye-conflict.png"))

    # decide: use the detected eye
    driver.find_element(By.ID, f"use-detected-{capture}").click()
    decided = _wait(driver, lambda d: _text(d, f"eye-decision-{capture}"))
    assert "detected eye used: left eye" in decided and "olivia" in decided
    _wait(driver, lambda d: "Left eye: done" in _text(d, "checklist"))
    assert "Right eye: done" in _text(driver, "checklist")
    assert not driver.find_elements(By.CSS_SELECTOR, ".eye-conflict")
    assert CONFLICT not in _text(driver, "visit")
    code = driver.find_element(By.ID, "outcome").get_attribute("data-code")
    assert code in ("rescreen", "refer", "glaucoma_refer", "human_grading")
