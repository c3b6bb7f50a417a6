"""What the headless-Chromium tests share: a served appliance (``appliance serve`` as its own
process on free ports, users added through the CLI, started when ``/healthz`` answers) and a
Chromium driver, plus one wait that reports the page it gave up on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import free_port, require_tool
from tests.web_helpers import PASSWORD

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "appliance.cli")


@dataclass(frozen=True)
class Served:
    base: str  # http://127.0.0.1:<web port>
    root: Path  # the test's folder: appliance.toml, data/, serve.log
    env: dict[str, str]  # APPLIANCE_CONFIG set, for more CLI calls


@contextmanager
def serve(
    root: Path, settings: str, users: Sequence[tuple[str, str, Sequence[str]]]
) -> Iterator[Served]:
    """``appliance serve`` on ``root``: the data directory, free web and DICOM ports, then
    ``settings`` (TOML lines; tables last); ``users``: (name, role, extra ``users add`` args),
    each with the test password."""
    web_port = free_port()
    config = root / "appliance.toml"
    config.write_text(
        f'data_dir = "{root / "data"}"\n'
        f"web_port = {web_port}\n"
        'dicom_host = "127.0.0.1"\n'
        f"dicom_port = {free_port()}\n"
        "min_free_disk_mb = 0\n" + settings
    )
    env = {**os.environ, "APPLIANCE_CONFIG": str(config)}
    for name, role, extra in users:
        subprocess.run(
            [*CLI, "users", "add", name, "--role", role, *extra],
            input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True,
        )  # fmt: skip
    log = (root / "serve.log").open("wb")
    server = subprocess.Popen([*CLI, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{web_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                    response.read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "serve.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield Served(base=base, root=root, env=env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@contextmanager
def chromium(*args: str, prefs: dict[str, Any] | None = None) -> Iterator[Any]:
    """A headless Chromium (selenium) at 1280 x 900, with extra command-line ``args``."""
    binary = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", *args):  # fmt: skip
        options.add_argument(arg)
    if prefs:
        options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: Any, predicate: Any, timeout: float) -> Any:
    """``predicate(driver)``'s first true value; on timeout an AssertionError with the page."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(
            driver,
            timeout,
            poll_frequency=0.25,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(predicate)
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"gave up waiting at {driver.current_url}:\n{page[:3000]}") from None
