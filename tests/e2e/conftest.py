"""What the browser tests share: a real headless Chromium (Debian's chromium + chromedriver)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[object]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        # As for a missing PostgreSQL: skipped on a developer's machine, a failure in CI, where
        # deploy/dev/system-packages.sh (make test) installs both; a silent skip there would
        # pass the browser tests without running them.
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing in CI: make test must install "
                        "Debian's chromium and chromium-driver (deploy/dev/system-packages.sh)")
        pytest.skip("Debian chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage",
                # Tests only: the pages serve HTTPS with a certificate from a local CA made per
                # test (Chromium on Linux reads trust from an NSS database, not a CA file);
                # the tests' own HTTP clients verify that certificate against its CA.
                "--ignore-certificate-errors"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
