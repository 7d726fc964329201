"""The web console (issue 20) in a real headless Chromium against real agents with the demo
app, a real orchestrator and nats-server: a bad token gets a clear message; an operator logs
in and sees the pair; a viewer sees no action and a forged action call from the page gets
403; a switchover started from the page shows its steps complete and the new Active, live;
the live stream resumes after the orchestrator restarts (a pause and a resume from the page
then show); the Active SIGKILLed fails over on the page without a reload.

One pair per module, in order: the switchover moves the cluster to secondary, the last test
kills it. Screenshots of each page go to ``test-artifacts/console/``."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions

from agent_rig import read_pid
from conftest import reset_bus
from console_rig import browser, element, log_in, page_fetch, screenshot, text_of, wait
from orchestrator_rig import (
    OPERATOR,
    VIEWER,
    Pair,
    both_nodes_ready,
    leader_ready,
)
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

pytestmark = pytest.mark.system

CLUSTER = "console"
GROUP = "console-group"
CODE = "rule.web-hung"
#: Alert only: the Active's app frozen raises an alert that nothing repairs until it runs.
RULE = """
[[rules]]
name = "web-hung"
check = "web-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 3
actions = [{ do = "alert", severity = "critical" }]
"""
#: A group of the one cluster (the overview and the group page show it).
CONFIG = f"""
[[groups]]
name = "{GROUP}"

[[groups.members]]
cluster = "{CLUSTER}"
priority = 0
"""


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("console")
    p = Pair(cluster=CLUSTER, tmp=tmp, bus_url=nats_server.url, public_port=free_port())
    try:
        asyncio.run(_fresh_start(p))
        yield p
    finally:
        p.stop_all()


async def _fresh_start(pair: Pair) -> None:
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())
    # start_pair's, with the lag sampled every second (the chart has points within the test).
    pair.add_node("primary", "primary", initial_role="active", extra=RULE).start()
    pair.add_node("secondary", "secondary", initial_role="passive", extra=RULE).start()
    config = pair.tmp / "orchestrator.toml"
    config.write_text(CONFIG)
    env = {"TANDEM_ORCHESTRATOR_LAG_SAMPLE_S": "1", "TANDEM_ORCHESTRATOR_CONFIG": str(config)}
    pair.add_orchestrator(extra_env=env).start()
    await leader_ready(pair)
    await both_nodes_ready(pair)


def _lose_node(pair: Pair, node: str) -> None:
    """The node is gone: its agent and its application are killed without a word."""
    agent = pair.agents[node].proc
    assert agent is not None
    agent.kill()
    agent.wait(10)
    pid = read_pid(pair.tmp / node / "state" / "apps" / "web.pid")
    if pid is not None:
        os.kill(pid, 9)


def base(pair: Pair) -> str:
    return f"http://127.0.0.1:{pair.api_ports[0]}"


def cluster_row(pair: Pair) -> str:
    return f'#clusters tr[data-cluster="{pair.cluster}"]'


@pytest.mark.timeout(180)
async def test_a_bad_token_gets_a_clear_message(pair: Pair) -> None:
    with browser() as driver:
        log_in(driver, base(pair), "not-a-token-of-this-orchestrator")
        message = element(driver, "[data-testid=login-error]").text
        assert message.startswith("the API refused this token (401): "), message
        assert not driver.execute_script("return sessionStorage.length")
        screenshot(driver, "login-error")


@pytest.mark.timeout(180)
async def test_an_operator_logs_in_and_sees_the_pair(pair: Pair) -> None:
    await both_nodes_ready(pair)
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        row = cluster_row(pair)
        wait(
            driver,
            lambda d: text_of(d, f"{row} [data-testid=active]") == "primary",
            "primary Active",
        )
        wait(driver, lambda d: text_of(d, "[data-testid=live]") == "live", "the stream live")
        assert text_of(driver, "[data-testid=role]").startswith("operator")
        wait(driver, lambda d: "serving" in text_of(d, row), "the pair serving")
        wait(driver, lambda d: "meeting" in text_of(d, f"{row} [data-testid=rpo]"), "the RPO")
        screenshot(driver, "overview")
        element(driver, f'tr[data-group="{GROUP}"] a').click()
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "svg.graph rect"),
            "the group's graph",
        )
        assert text_of(driver, f'#members tr[data-cluster="{CLUSTER}"]').startswith("0 console")
        assert driver.find_elements(By.CSS_SELECTOR, "[data-action=group-switchover]")
        screenshot(driver, "group")
        driver.back()

        element(driver, f"{row} a").click()
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node=secondary]"),
            "nodes",
        )
        assert driver.find_elements(
            By.CSS_SELECTOR, "[data-node=secondary] [data-action=make-active]"
        )
        wait(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline li"), "the event timeline"
        )
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#lag canvas"), "the lag chart")
        wait(
            driver,
            lambda d: int((text_of(d, "[data-testid=lag-samples]") or "0").split()[0]) >= 3,
            "three lag samples",
        )
        screenshot(driver, "cluster", full=True)

        element(driver, 'header nav a[href="#/events"]').click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline li"), "every event")
        element(driver, "#events-type").send_keys("Heartbeat")
        wait(
            driver,
            lambda d: all(
                "Heartbeat" in li.text for li in d.find_elements(By.CSS_SELECTOR, "#timeline li")
            ),
            "only Heartbeat events",
        )
        screenshot(driver, "events")

        element(driver, 'header nav a[href="#/alerts"]').click()
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#alerts, [data-testid=no-alerts]"),
            "alerts",
        )
        screenshot(driver, "alerts")
        with browser(390, 844) as phone:
            log_in(phone, base(pair), OPERATOR)
            wait(phone, lambda d: text_of(d, f"{row} [data-testid=active]") == "primary", "phone")
            screenshot(phone, "overview-phone")


@pytest.mark.timeout(180)
async def test_a_viewer_sees_no_actions_and_a_forged_call_gets_403(pair: Pair) -> None:
    with browser() as driver:
        log_in(driver, base(pair), VIEWER)
        wait(driver, lambda d: text_of(d, "[data-testid=role]").startswith("viewer"), "viewer")
        driver.get(f"{base(pair)}/#/cluster/{pair.cluster}")
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#nodes tr[data-node=secondary]"),
            "nodes",
        )
        assert driver.find_elements(By.CSS_SELECTOR, "[data-action], dialog") == []
        assert "Make Active" not in driver.find_element(By.TAG_NAME, "body").text
        driver.get(f"{base(pair)}/#/group/{GROUP}")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "svg.graph rect"), "the group")
        assert driver.find_elements(By.CSS_SELECTOR, "[data-action], dialog, button.primary") == []

        forged = page_fetch(
            driver, "POST", f"/api/v1/clusters/{pair.cluster}/switchover", {"to": "secondary"}
        )
        assert forged["status"] == 403, forged
        assert forged["body"]["detail"], forged


@pytest.mark.timeout(300)
async def test_an_alert_shows_live_and_is_acknowledged_and_silenced_from_the_page(
    pair: Pair,
) -> None:
    """The Active's app frozen (SIGSTOP) raises the rule's alert: the open alerts page shows
    it without a reload; acknowledged and silenced from the page; cleared once it runs."""
    await both_nodes_ready(pair)
    app = read_pid(pair.tmp / "primary" / "state" / "apps" / "web.pid")
    assert app is not None
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        element(driver, 'header nav a[href="#/alerts"]').click()
        wait(driver, lambda d: text_of(d, "[data-testid=live]") == "live", "the stream live")
        row = f'#alerts tr[data-cluster="{CLUSTER}"][data-code="{CODE}"]'
        os.kill(app, signal.SIGSTOP)
        try:
            element(driver, row)
            assert "firing" in text_of(driver, row)
            assert "(silenced)" not in text_of(driver, row)
            element(driver, f"{row} [data-action=ack]").click()
            wait(driver, expected_conditions.alert_is_present(), "the confirmation").accept()
            wait(driver, lambda d: "acknowledged" in text_of(d, row), "acknowledged")
            element(driver, f"{row} [data-action=silence]").click()
            element(driver, f"{row} form.inline button[type=submit]").click()
            wait(driver, lambda d: "(silenced)" in text_of(d, row), "silenced")
            screenshot(driver, "alerts-firing")
        finally:
            os.kill(app, signal.SIGCONT)
        wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, row), "the alert gone")
        element(driver, "[data-state-filter=cleared]").click()
        wait(driver, lambda d: "cleared" in text_of(d, row), "the alert cleared")
    await both_nodes_ready(pair)


@pytest.mark.timeout(300)
async def test_a_switchover_from_the_page_shows_its_steps_complete(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        element(driver, f"{cluster_row(pair)} a").click()
        element(driver, "[data-node=secondary] [data-action=make-active]").click()
        wait(
            driver,
            lambda d: "The guard allows it now." in text_of(d, "[data-testid=preview]"),
            "the preview",
        )
        planned = driver.find_elements(By.CSS_SELECTOR, "[data-testid=preview] li")
        assert len(planned) >= 7, [s.text for s in planned]  # stop apps ... start apps
        element(driver, "#action-reason").send_keys("console test")
        element(driver, "#action-confirm").click()

        wait(
            driver,
            lambda d: d.find_elements(
                By.CSS_SELECTOR, "#saga[data-state=running], #saga[data-state=completed]"
            ),
            "the saga shown",
        )
        saga = element(driver, "#saga").get_attribute("data-saga")
        wait(
            driver, lambda d: text_of(d, "[data-testid=active]") == "secondary", "secondary Active"
        )
        wait(
            driver,
            lambda d: d.find_elements(
                By.CSS_SELECTOR, f'#saga[data-saga="{saga}"][data-state=completed]'
            ),
            "the saga completed",
        )
        states = [
            li.get_attribute("data-state")
            for li in driver.find_elements(By.CSS_SELECTOR, "#saga li")
        ]
        assert states == ["completed"] * len(planned), states
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, f'#history tr[data-saga="{saga}"]'),
            "history",
        )
        screenshot(driver, "cluster-after-switchover", full=True)
    await both_nodes_ready(pair)


@pytest.mark.timeout(300)
async def test_the_stream_resumes_after_the_orchestrator_restarts(pair: Pair) -> None:
    """The page stays open while its orchestrator is stopped and started again: it says it
    is reconnecting, then live, and then shows a pause and a resume made from it, live. A
    login meanwhile says the API cannot be reached (not that the token is refused)."""
    await both_nodes_ready(pair)
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        element(driver, f"{cluster_row(pair)} a").click()
        wait(driver, lambda d: text_of(d, "[data-testid=live]") == "live", "the stream live")
        driver.execute_script("window.__sameDocument = true")

        orchestrator = pair.orchestrators[0]
        with browser() as late:
            late.get(base(pair) + "/")  # a login page loaded before the orchestrator stops
            element(late, "#token")
            orchestrator.stop()
            wait(
                driver, lambda d: text_of(d, "[data-testid=live]") == "reconnecting", "reconnecting"
            )
            element(late, "#token").send_keys(OPERATOR + Keys.ENTER)
            unreachable = element(late, "[data-testid=login-error]").text
            assert unreachable.startswith("cannot reach the orchestrator API: "), unreachable
            screenshot(late, "login-unreachable")
        orchestrator.start()
        await leader_ready(pair)
        wait(driver, lambda d: text_of(d, "[data-testid=live]") == "live", "live again")

        element(driver, "[data-action=pause]").click()
        element(driver, "#action-reason").send_keys("console restart test")
        element(driver, "#action-confirm").click()
        wait(driver, lambda d: "paused by" in text_of(d, "article.cluster"), "paused shown")
        wait(driver, lambda d: "ClusterPaused" in text_of(d, "#timeline"), "ClusterPaused")
        element(driver, "[data-action=resume]").click()
        element(driver, "#action-confirm").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-action=pause]"), "resumed")
        wait(driver, lambda d: "ClusterResumed" in text_of(d, "#timeline"), "ClusterResumed")
        assert driver.execute_script("return window.__sameDocument") is True, "the page reloaded"


@pytest.mark.timeout(300)
async def test_the_failover_of_a_killed_active_shows_without_a_reload(pair: Pair) -> None:
    await both_nodes_ready(pair)
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        element(driver, f"{cluster_row(pair)} a").click()
        wait(
            driver, lambda d: text_of(d, "[data-testid=active]") == "secondary", "secondary Active"
        )
        wait(driver, lambda d: text_of(d, "[data-testid=live]") == "live", "the stream live")
        driver.execute_script("window.__sameDocument = true")

        _lose_node(pair, "secondary")

        wait(
            driver,
            lambda d: text_of(d, "[data-testid=active]") == "primary",
            "primary Active again",
        )
        wait(
            driver,
            lambda d: (
                "failover" in text_of(d, "#saga h2")
                and d.find_elements(By.CSS_SELECTOR, "#saga[data-state=completed]")
            ),
            "the failover saga completed",
        )
        assert driver.execute_script("return window.__sameDocument") is True, "the page reloaded"
        screenshot(driver, "cluster-after-failover", full=True)


@pytest.mark.timeout(400)
async def test_a_paused_cluster_s_failover_is_confirmed_from_the_page(pair: Pair) -> None:
    """The node lost by the previous test comes back (reinstated from the page when it waits
    for that); the cluster is paused from the page, its Active killed: the page offers to
    confirm the recommended failover, shows its preview and follows it to the end."""
    pair.agents["secondary"].start()
    with browser() as driver:
        log_in(driver, base(pair), OPERATOR)
        element(driver, f"{cluster_row(pair)} a").click()
        wait(
            driver,
            lambda d: (
                "not alive" not in (row := text_of(d, "#nodes tr[data-node=secondary]"))
                and "alive" in row
                and "passive" in row
            ),
            "secondary back",
        )
        if driver.find_elements(By.CSS_SELECTOR, "[data-node=secondary] [data-action=reinstate]"):
            element(driver, "[data-node=secondary] [data-action=reinstate]").click()
            element(driver, "#action-confirm").click()
            wait(driver, lambda d: not d.find_elements(By.CSS_SELECTOR, "dialog"), "reinstated")
        await both_nodes_ready(pair)

        element(driver, "[data-action=pause]").click()
        element(driver, "#action-confirm").click()
        wait(driver, lambda d: "paused by" in text_of(d, "article.cluster"), "paused shown")
        _lose_node(pair, "primary")
        element(driver, "[data-action=confirm-failover]").click()
        wait(
            driver,
            lambda d: "The guard allows it now." in text_of(d, "[data-testid=preview]"),
            "the failover's preview",
        )
        element(driver, "#action-confirm").click()
        wait(
            driver, lambda d: text_of(d, "[data-testid=active]") == "secondary", "secondary Active"
        )
        wait(
            driver,
            lambda d: (
                "failover" in text_of(d, "#saga h2")
                and d.find_elements(By.CSS_SELECTOR, "#saga[data-state=completed]")
            ),
            "the confirmed failover completed",
        )
        screenshot(driver, "cluster-after-confirmed-failover", full=True)
