"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by selenium
for the web console's tests: nothing is downloaded (selenium-manager is not used: the
driver's path is given), explicit waits only (the machine may be busy)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from conftest import require

log = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Generous: two cores, other tests beside.
WAIT_S = 60.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "console"

T = TypeVar("T")


def require_chromium() -> None:
    """Skip (saying why) when Debian's chromium or its driver is not installed; fail instead
    under TANDEM_REQUIRE_ALL=1 (CI)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    require(
        "a headless browser",
        not missing,
        f"{', '.join(missing)} missing: apt-get install chromium chromium-driver "
        "(listed in .ci/system-packages)",
    )


@contextmanager
def browser(width: int = 1280, height: int = 800) -> Iterator[WebDriver]:
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    # The browser's console messages, read back when a test fails.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager: never fetch anything
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # The window's size includes its frame: make the page itself width x height.
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])
        yield driver
        failures = page_errors(driver)
        assert not failures, f"the page's scripts failed or were blocked: {failures}"
    finally:
        driver.quit()


def page_errors(driver: WebDriver) -> list[str]:
    """What the browser's console said; returned: the script errors and the content security
    policy's refusals (a refused API call is the test's business, not an error)."""
    errors = []
    try:
        entries = driver.get_log("browser")
    except WebDriverException:
        return []
    for entry in entries:
        log.info("browser console: %s", entry)
        if entry.get("source") in ("javascript", "security"):
            errors.append(str(entry.get("message")))
    return errors


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], what: str) -> T:
    """``condition``'s first truthy value within WAIT_S (a stale element is a retry)."""

    def attempt(d: WebDriver) -> T | bool:
        try:
            return condition(d)
        except StaleElementReferenceException:
            return False

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(attempt)  # type: ignore[return-value]
    except Exception as exc:
        shot = screenshot(driver, "failed-" + what.replace(" ", "-")[:60])
        raise AssertionError(f"waited {WAIT_S}s for {what} (screenshot {shot}): {exc!r}") from exc


def text_of(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def element(driver: WebDriver, css: str) -> WebElement:
    return wait(driver, lambda d: (d.find_elements(By.CSS_SELECTOR, css) or [None])[0], css)


def log_in(driver: WebDriver, base_url: str, token: str) -> None:
    driver.get(base_url + "/")
    field = element(driver, "#token")
    field.clear()
    field.send_keys(token + Keys.ENTER)  # the keyboard submits the form


def screenshot(driver: WebDriver, name: str, *, full: bool = False) -> Path:
    """The page as shown (``full``: the whole page, the window made as tall for a moment)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if not full:
        driver.save_screenshot(str(path))
        return path
    size = driver.get_window_size()
    inner = driver.execute_script("return window.innerHeight")
    tall = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], size["height"] - inner + tall)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    return path


def page_fetch(driver: WebDriver, method: str, path: str, body: Any = None) -> dict[str, Any]:
    """A fetch from the page's own context with the tab's token (as a forged call would be):
    its status and JSON answer."""
    script = """
        const [method, path, body, done] = arguments;
        const token = sessionStorage.getItem("tandem.console.token");
        fetch(path, {method, headers: {"Authorization": "Bearer " + token,
                                       "Content-Type": "application/json"},
                     body: body === null ? undefined : JSON.stringify(body)})
          .then(async (r) => done({status: r.status, body: await r.json()}))
          .catch((e) => done({status: -1, body: String(e)}));
    """
    answer: dict[str, Any] = driver.execute_async_script(script, method, path, body)
    return answer
