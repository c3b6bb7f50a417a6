"""Headless Chromium, issue #15's admin and review items: a left eye uploaded as "Right eye
(OD)" at the station; the clinician decides its eye on the review page; the admin changes one
setting in the settings form (the others stay) and reads both in plain words in the audit log.

A served appliance (``appliance serve``, shipped models, a walk-in patient); no archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.served import chromium, wait_until
from tests.web.test_browser_eye_label import _text, shipped_models_app
from tests.web_helpers import PASSWORD

WAIT = 120.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    users = [("olivia", "operator", ()), ("chen", "clinician", ()), ("ada", "admin", ())]
    with shipped_models_app(tmp_path_factory.mktemp("reviewadmin"), users) as app:
        yield app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _wait(driver: Any, predicate: Any, timeout: float = WAIT) -> Any:
    return wait_until(driver, predicate, timeout)


def _login(driver: Any, base: str, name: str, lands: str) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{base}/login")
    _wait(driver, lambda d: d.find_elements(By.NAME, "username"))
    driver.find_element(By.NAME, "username").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver, lambda d: d.current_url.endswith(lands))


def _mislabelled_visit(served: dict[str, Any], driver: Any) -> str:
    """The operator registers a walk-in and uploads R as R, then L as R; the conflict's id."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _login(driver, served["base"], "olivia", "/station")
    walk_in = driver.find_element(By.ID, "walk-in")
    walk_in.find_element(By.NAME, "patient_id").send_keys("EYE-WEB-2")
    walk_in.find_element(By.NAME, "family_name").send_keys("Doe")
    walk_in.find_element(By.NAME, "given_name").send_keys("Jane")
    driver.execute_script("document.getElementById('walk-in-birth-date').value = '1961-02-03';")
    walk_in.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[data-upload]"))
    for photo in ("R", "L"):
        form = driver.find_element(By.CSS_SELECTOR, "form[data-upload]")
        Select(form.find_element(By.NAME, "laterality")).select_by_value("R")
        form.find_element(By.NAME, "file").send_keys(str(served["photos"][photo]))
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait(driver, lambda d: "Received" in d.find_element(By.CSS_SELECTOR, "[data-status]").text)
    conflict = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eye-conflict"))[0]
    return str(conflict.get_attribute("id")).removeprefix("eye-conflict-")


def test_review_eye_decision_then_one_setting_then_the_audit_in_words(
    served: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    base, driver = served["base"], browser
    capture = _mislabelled_visit(served, driver)
    shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or served["root"])

    # the clinician decides the eye on the review page
    _login(driver, base, "chen", "/review")
    driver.find_element(By.LINK_TEXT, "Doe, Jane").click()
    button = _wait(driver, lambda d: d.find_elements(By.ID, f"use-detected-{capture}"))[0]
    assert button.text == "Use the detected eye: left eye"
    assert "Keep the label: right eye" in _text(driver, f"eye-conflict-{capture}")
    button.click()
    _wait(driver, lambda d: "The outcome was decided again" in d.page_source)
    left = driver.find_element(By.ID, "eye-section-L")
    assert left.find_elements(By.ID, f"photo-{capture}")
    decided = left.find_element(By.ID, f"eye-decision-{capture}").text
    assert decided.startswith("Detected eye used: left eye by chen (clinician)")
    assert not driver.find_elements(By.ID, f"use-detected-{capture}")
    driver.save_screenshot(str(shots / "review-eye-decided.png"))

    # the admin changes one setting; the form was pre-filled, the others stay
    _login(driver, base, "ada", "/admin")
    driver.get(f"{base}/admin/settings")
    station = _wait(driver, lambda d: d.find_elements(By.ID, "set-station_name"))[0]
    assert station.get_attribute("value") == "STATION1"
    assert (
        driver.find_element(By.ID, "set-web_port").get_attribute("value") == base.rsplit(":", 1)[1]
    )
    assert driver.find_element(By.ID, "set-api_token").get_attribute("value") == ""
    station.clear()
    station.send_keys("EYE-CLINIC-9")
    driver.find_element(By.CSS_SELECTOR, "#settings-edit button[type=submit]").click()
    _wait(driver, lambda d: "Valid and saved." in _text(d, "settings-result"))
    assert "station_name STATION1 EYE-CLINIC-9" in _text(driver, "settings-edited")
    saved = (served["root"] / "data" / "settings.toml").read_text()
    assert saved == 'station_name = "EYE-CLINIC-9"\n'
    again = driver.find_element(By.ID, "set-station_name").get_attribute("value")
    assert again == "EYE-CLINIC-9"
    driver.execute_script("document.getElementById('set-station_name').scrollIntoView();")
    driver.save_screenshot(str(shots / "admin-settings-form.png"))

    # both in plain words in the audit log
    driver.get(f"{base}/admin/audit")
    said = _wait(driver, lambda d: _text(d, "audit-events"))
    assert (
        "ada changed the setting station_name from STATION1 to EYE-CLINIC-9 (applies at the "
        "next start)." in said
    )
    assert (
        f"chen (clinician) used the detected eye for photograph {capture} of patient EYE-WEB-2 "
        "(Jane Doe): left eye." in said
    )
    assert "ada opened the audit log." in said
    driver.save_screenshot(str(shots / "admin-audit-words.png"))
