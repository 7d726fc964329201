"""The console benchmark's browser: Debian's headless Chromium driven by selenium (its own
chromedriver, nothing downloaded), with the page's timings read from the page itself.

- ``first_render``: the token is put in the tab's ``sessionStorage`` (as a login leaves it),
  then the page is loaded again; the time from the navigation's start (the page's own
  ``performance`` clock) until the overview shows its first cluster row, and every byte the
  page transferred by then. The baseline is the login page (no token: no data).
- ``watch_rows`` / ``seen_rows``: a ``MutationObserver`` on the overview's table records, for
  each change of a row, the cluster, the wall-clock time (``Date.now()``: the same clock as
  the publisher, on this machine) and the alert count it shows.
"""

from __future__ import annotations

import shutil
import time
from types import TracebackType
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from console_rig import cluster_name

TOKEN_KEY = "tandem.console.token"
ROWS = "#clusters tbody tr[data-cluster]"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

_WAIT_FOR = """
const [selector, done] = [arguments[0], arguments[arguments.length - 1]];
const look = () => document.querySelector(selector)
  ? done(performance.now()) : requestAnimationFrame(look);
look();
"""

_BYTES = """
const nav = performance.getEntriesByType("navigation")[0];
return performance.getEntriesByType("resource").reduce(
  (sum, e) => sum + (e.transferSize || 0), nav ? nav.transferSize : 0);
"""

_WATCH = """
window.__seen = [];
const table = document.querySelector("#clusters tbody");
new MutationObserver((records) => {
  const now = Date.now();
  const rows = new Set();
  for (const r of records) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    const row = el && el.closest("tr[data-cluster]");
    if (row) rows.add(row);
  }
  for (const row of rows) {
    const cells = row.querySelectorAll("td");
    window.__seen.push([row.dataset.cluster, now, cells[4] ? cells[4].textContent : ""]);
  }
}).observe(table, { subtree: true, childList: true, characterData: true });
"""


class Browser:
    def __init__(self, url: str) -> None:
        self.url = url
        if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
            raise RuntimeError(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian chromium-driver)")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        options.add_argument("--window-size=1280,800")
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        self.driver.set_script_timeout(120)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.driver.quit()

    def _load_until(self, selector: str) -> tuple[float, int]:
        self.driver.get(self.url + "/")
        shown_ms = self.driver.execute_async_script(_WAIT_FOR, selector)
        return shown_ms / 1000, int(self.driver.execute_script(_BYTES))

    def _cache(self, enabled: bool) -> None:
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": not enabled})

    def first_render(self, token: str, runs: int = 5) -> dict[str, Any]:
        """Cold (the browser's cache off: every asset fetched) and warm (cached assets)."""
        self._cache(False)
        login_cold = self._load_until("form")
        self.driver.execute_script(f"sessionStorage.setItem('{TOKEN_KEY}', arguments[0])", token)
        cold = self._load_until(ROWS)
        self._cache(True)
        self._load_until(ROWS)  # fills the cache
        warm = sorted(self._load_until(ROWS)[0] for _ in range(runs))
        return {
            "first_render_s": cold[0],
            "overview_bytes": cold[1],
            "first_render_warm_s_p50": warm[len(warm) // 2],
            "first_render_warm_s_max": warm[-1],
            "rows_shown": len(self.driver.find_elements("css selector", ROWS)),
            "baseline_login_page_s": login_cold[0],
            "baseline_login_page_bytes": login_cold[1],
        }

    def watch_rows(self) -> None:
        self.driver.execute_script(_WATCH)
        time.sleep(1)  # the stream is up (the page connected it at load)

    def seen_rows(self) -> list[list[Any]]:
        return list(self.driver.execute_script("return window.__seen"))


def page_delays(seen: list[list[Any]], sent: list[list[int]]) -> list[float]:
    """For each row change the page showed, the time since the change it shows was published:
    the latest publish for that cluster, at or before the moment shown, that says what the row
    now says (alert raised: a count above 0; cleared: 0)."""
    by_cluster: dict[str, list[tuple[int, bool]]] = {}
    for i, raised, at_ms in sent:
        by_cluster.setdefault(cluster_name(i), []).append((at_ms, bool(raised)))
    delays = []
    for cluster, shown_ms, count in seen:
        raised_now = count.strip() not in ("", "0")
        published = by_cluster.get(cluster, [])
        candidates = [at for at, raised in published if at <= shown_ms and raised == raised_now]
        if candidates:
            delays.append((shown_ms - max(candidates)) / 1000)
    return delays
