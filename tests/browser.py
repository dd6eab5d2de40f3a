"""Headless Chromium for the tests that look at a page as a person would (the MLflow UI): Debian's `chromium`
and `chromium-driver` packages driven by Selenium, with no download of a browser or a driver at run time.

    reason = unavailable()          # None, or why no browser test can run here (a skip reason)
    with chrome() as driver:        # a fresh profile each time: no local storage, cookies or cache
        driver.get(url)
        wait_for_text(driver, "Runs")
        save_screenshot(driver, "page.png", tmp_path, screenshot_dirs())

The test command (README, .ci/run) runs tests/install_services.sh first, which installs the packages when they are
missing (`apt-get install chromium chromium-driver`); where it cannot, the browser tests skip and say why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

INSTALL_HINT = "bash tests/install_services.sh (apt-get install chromium chromium-driver; see docs/testing.md)"
# Chromium's own binary needs no sandbox flags beyond these to run headless as root in a container; the rest
# keep it off the network (no component updates, sync, field trials or QUIC) and out of first-run UI.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
VIEWPORT = (1600, 1000)


def _find(*candidates: str) -> str | None:
    for name in candidates:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path
    return None


def browser_path() -> str | None:
    return _find("/usr/bin/chromium", "chromium")


def driver_path() -> str | None:
    return _find("/usr/bin/chromedriver", "chromedriver")


def unavailable() -> str | None:
    """Why no headless browser can run here, or None when Selenium, Chromium and chromedriver are all there."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    if browser_path() and driver_path():
        return None
    missing = " and ".join(n for n, p in (("chromium", browser_path()), ("chromedriver", driver_path())) if not p)
    return f"no Chromium ({missing} missing): {INSTALL_HINT}"


def _set_viewport(driver, width: int, height: int) -> None:
    """--window-size sets the outer window, and headless Chromium keeps room for its (invisible) toolbar: size
    the window so that the page itself, and so every screenshot, is width x height."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(width + outer["width"] - inner[0], height + outer["height"] - inner[1])


@contextmanager
def chrome(viewport: tuple[int, int] = VIEWPORT) -> Iterator:
    """A headless Chromium WebDriver on a new, empty profile; quit and the profile removed on exit."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="artsweep-chromium-")
    options = Options()
    options.binary_location = browser_path()  # with Service's path: Selenium Manager is never run
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={viewport[0]},{viewport[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path()), options=options)
    try:
        driver.set_page_load_timeout(60)
        _set_viewport(driver, *viewport)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def page_text(driver) -> str:
    """The page's visible text (innerText of the body; '' while there is no body yet)."""
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


def wait_until(driver, condition: Callable[[], object], timeout: float, what: str):
    """Poll condition() until it returns something truthy (returned); AssertionError naming `what`, the URL and
    the start of the page's text after `timeout` seconds. Exceptions inside condition count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001  (stale elements, a page mid-navigation)
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            text = " | ".join(page_text(driver).split("\n"))[:1500]
            raise AssertionError(f"{what}: not after {timeout:.0f} s on {driver.current_url}\npage text: {text}")
        time.sleep(0.2)


def wait_for_text(driver, text: str, timeout: float = 30) -> None:
    """Wait until `text` is part of the page's visible text."""
    wait_until(driver, lambda: text in page_text(driver), timeout, f"text {text!r}")


def set_local_storage(driver, origin: str, items: dict[str, str]) -> None:
    """Set localStorage items of `origin` before its app first runs: loads `origin`/health (any page of that
    origin that runs no script would do), sets the items there."""
    driver.get(origin.rstrip("/") + "/health")
    for key, value in items.items():
        driver.execute_script("window.localStorage.setItem(arguments[0], arguments[1])", key, value)


def screenshot_dirs() -> list[Path]:
    """Extra folders for screenshots: ARTSWEEP_SCREENSHOTS=<dir> (created if missing), for the README's images."""
    extra = os.environ.get("ARTSWEEP_SCREENSHOTS")
    return [Path(extra)] if extra else []


def save_screenshot(driver, name: str, *dirs: Path | list[Path]) -> list[Path]:
    """Save a PNG of the viewport as `name` into each folder of dirs (paths or lists of paths); return the files."""
    folders = [Path(d) for item in dirs for d in (item if isinstance(item, list) else [item])]
    png = driver.get_screenshot_as_png()
    out = []
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png)
        out.append(folder / name)
    return out
