"""Headless Chromium for the web tests (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

``make test`` installs the browser (services/web/service.mk). A test module calls ``require_browser()`` at
import: without the browser its tests skip, saying why.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DESKTOP = (1280, 900)


def require_browser() -> None:
    """Skip the calling module (at import) when Selenium or the browser is missing."""
    pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make install)")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            f"headless Chromium not found ({CHROMIUM}, {CHROMEDRIVER}): `make test` installs the Debian packages "
            "chromium and chromium-driver (services/web/service.mk)",
            allow_module_level=True,
        )


@contextlib.contextmanager
def chrome(*extra_args: str) -> Iterator[Any]:
    """A headless Chromium WebDriver, quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", *extra_args):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
