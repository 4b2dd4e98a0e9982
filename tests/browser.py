"""Debian's headless chromium driven through its own chromedriver, for the dashboard's browser
tests and its screenshots (tests/test_dashboard_browser.py). The driver and the binary are named
explicitly, so selenium-manager never looks for a driver on the network."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 800)


def missing() -> str | None:
    """What is missing to drive a browser, in words; None when nothing is."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    return f"{' and '.join(absent)} not installed (./run.sh test installs them)" if absent else None


def require_browser(environ: Mapping[str, str]) -> None:
    """Skip the test when chromium is missing, except in CI (the variable CI set), where
    ./run.sh installs it: there a missing browser fails the test instead of hiding it."""
    why = missing()
    if why and environ.get("CI"):
        pytest.fail(f"CI: {why}")
    if why:
        pytest.skip(why)


def start_browser() -> webdriver.Chrome:
    """Headless chromium with a 1280x800 window, the system's driver, bounded page and script waits."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.add_argument("--headless=new")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    # In a container, as root, chromium's sandbox cannot start and /dev/shm is small.
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.add_argument("--disable-dev-shm-usage")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(10)
    return driver
