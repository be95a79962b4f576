"""Headless Debian Chromium through Selenium, for the report tests (skips with the reason where absent)."""

from __future__ import annotations

import shutil

import pytest


def chromium():
    """A headless Chrome driver on /usr/bin/chromium + chromedriver."""
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Debian chromium / chromium-driver are not installed (make system-deps installs them)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)
