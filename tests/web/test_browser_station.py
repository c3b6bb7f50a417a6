"""Headless Chromium, German locale, at the camera station: the birth date typed YYYY-MM-DD
(a locale-style date refused by the field), an upload's status line replaced by the verdict
(never "Checking quality…" beside it), a not-gradable photo superseded by a later gradable one,
the finished visit reopened read-only from "Finished today" and found again by patient search.

A served appliance (``appliance serve``, no screening model: quality checks only); no archive.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.synth.degrade import defocus
from tests.conftest import fundus, jpeg_bytes
from tests.web.served import chromium, serve, wait_until
from tests.web_helpers import PASSWORD

WAIT = 60.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("station")
    settings = f'models_dir = "{root / "no-models"}"\n'
    with serve(root, settings, [("olivia", "operator", ())]) as app:
        photos = {
            "blurred": root / "blurred.jpg",
            "sharp": root / "sharp.jpg",
        }
        photos["blurred"].write_bytes(jpeg_bytes(defocus(fundus(seed=8, size=(768, 1024)), 0.9)))
        photos["sharp"].write_bytes(jpeg_bytes(fundus(seed=9, size=(768, 1024))))
        shots = Path(os.environ.get("APPLIANCE_SCREENSHOTS") or root / "shots")
        shots.mkdir(parents=True, exist_ok=True)
        yield {"base": app.base, "photos": photos, "shots": shots}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium("--lang=de-DE", prefs={"intl.accept_languages": "de-DE,de"}) as driver:
        yield driver


def _wait(driver: Any, predicate: Any, timeout: float = WAIT) -> Any:
    return wait_until(driver, predicate, timeout)


def _send(driver: Any, photo: Path, eye: str, number: int) -> str:
    """Upload a photo; once the live visit shows it checked and the upload was answered, the
    status line (read in the same script turn, so nothing changes between the two reads)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    form = driver.find_element(By.CSS_SELECTOR, "form[data-upload]")
    Select(form.find_element(By.NAME, "laterality")).select_by_value(eye)
    form.find_element(By.NAME, "file").send_keys(str(photo))
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    script = (
        "const items = document.querySelectorAll('#visit li.capture');"
        "const item = items[arguments[0] - 1];"
        "const status = document.querySelector('[data-status]').textContent;"
        "if (!item || item.dataset.state !== 'checked' || status.startsWith('Sending')) {"
        "  return null;"
        "}"
        "return status;"
    )
    return str(_wait(driver, lambda d: d.execute_script(script, number)))


def test_station_walk_in_iso_date_live_verdicts_history_and_search(
    served: dict[str, Any], browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    base, driver = served["base"], browser
    driver.get(f"{base}/login")
    _wait(driver, lambda d: d.switch_to.active_element.get_attribute("name") == "username")
    driver.switch_to.active_element.send_keys("olivia", Keys.TAB, PASSWORD, Keys.ENTER)
    _wait(driver, lambda d: d.current_url.endswith("/station"))
    assert driver.execute_script("return navigator.language;") == "de-DE"

    # -- the birth date: YYYY-MM-DD text, whatever the locale ------------------------------------
    form = driver.find_element(By.ID, "walk-in")
    form.find_element(By.NAME, "patient_id").send_keys("B-100")
    form.find_element(By.NAME, "family_name").send_keys("Lovelace")
    form.find_element(By.NAME, "given_name").send_keys("Ada")
    born = form.find_element(By.NAME, "birth_date")
    assert born.get_attribute("type") == "text"
    assert born.get_attribute("placeholder") == "YYYY-MM-DD"
    born.send_keys("10.12.1950")  # how a German date picker would show it
    assert driver.execute_script("return arguments[0].validity.patternMismatch;", born)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert driver.current_url.endswith("/station")  # the browser kept the form: not sent
    assert driver.find_elements(By.ID, "walk-in")
    born.clear()
    born.send_keys("1950-12-10")
    assert born.get_attribute("value") == "1950-12-10"  # shown exactly as typed
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[data-upload]"))
    facts = driver.find_element(By.ID, "patient").text
    assert "1950-12-10" in facts and "B-100" in facts

    # -- the status line is replaced by the verdict; the blurred photo is superseded -------------
    status = _send(driver, served["photos"]["blurred"], "R", 1)
    assert status == "Received. Photo 1: ✗ Not gradable — take it again", status
    status = _send(driver, served["photos"]["sharp"], "R", 2)
    assert status == "Received. Photo 2: ✓ Gradable", status
    first = _wait(
        driver,
        lambda d: (
            "superseded"
            in (el := d.find_elements(By.CSS_SELECTOR, "#visit li.capture")[0]).get_attribute(
                "class"
            )
            and el
        ),
    )
    assert "Not gradable — superseded by a later photograph" in first.text
    assert "take it again" not in first.text
    checklist = driver.find_element(By.ID, "checklist").text
    assert "Right eye: done" in checklist and "Left eye: not photographed yet" in checklist
    driver.save_screenshot(str(served["shots"] / "station-superseded.png"))

    # -- finished: listed for today, reopened read-only, found by search -------------------------
    driver.find_element(By.CSS_SELECTOR, "#finish button").click()
    row = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#finished-visits .visit-line"))
    assert "Lovelace, Ada" in row[0].text and "B-100" in row[0].text
    row[0].find_element(By.LINK_TEXT, "Open").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "read-only"))
    assert len(driver.find_elements(By.CSS_SELECTOR, "#visit li.capture")) == 2
    assert not driver.find_elements(By.CSS_SELECTOR, "#visit form")  # read-only
    thumbs = driver.find_elements(By.CSS_SELECTOR, "#visit img.capture-thumb")
    assert len(thumbs) == 2
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0;"
    _wait(driver, lambda d: all(d.execute_script(loaded, t) for t in thumbs))
    driver.save_screenshot(str(served["shots"] / "station-past-visit.png"))

    driver.find_element(By.LINK_TEXT, "Find a patient").click()
    box = _wait(driver, lambda d: d.find_elements(By.ID, "search-q"))[0]
    box.send_keys("ada LOVE", Keys.ENTER)
    results = _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results tbody tr"))
    assert len(results) == 1 and "B-100" in results[0].text
    driver.save_screenshot(str(served["shots"] / "station-search.png"))
    results[0].find_element(By.LINK_TEXT, "Open").click()
    _wait(driver, lambda d: d.find_elements(By.ID, "read-only"))
    assert "Lovelace, Ada" in driver.find_element(By.ID, "patient").text

    # -- the returning patient: a new visit, the earlier one listed beside it ---------------------
    driver.find_element(By.CSS_SELECTOR, "#choose-returning button").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form[data-upload]"))
    assert "B-100" in driver.find_element(By.ID, "patient").text
    [earlier] = driver.find_elements(By.CSS_SELECTOR, "#earlier-visits tbody tr")
    assert "Lovelace, Ada" in earlier.text and "2" in earlier.text  # its two photos
    assert "No photos yet" in driver.find_element(By.ID, "visit").text
