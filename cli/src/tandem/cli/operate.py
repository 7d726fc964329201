"""``tandem status``, ``switchover``, ``failover``, ``group switchover``: the operator's
commands, through the orchestrator's REST API (what ``status`` shows is drawn by
``status_view.py``; the commands themselves are registered by ``main.py`` and ``actions.py``).

Exit codes: 0 done, 1 the operation failed or the wait timed out, 2 refused (bad request,
not allowed, missing ``--confirm``), 3 the API is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.markup import escape

from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_models import Accepted, Saga
from tandem.cli.api_target import resolve_api_url, resolve_token
from tandem.cli.status_view import describe_progress, render_status

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

POLL_INTERVAL_S = 0.2
HTTP_TIMEOUT_S = 10.0
DEFAULT_REASON = "requested with the tandem CLI"

#: How the commands get their client; tests replace it (e.g. with an httpx.MockTransport).
client_factory: Callable[[str, str | None, float], ApiClient] = ApiClient
#: The wait loop's clock and sleep (tests replace them to make time pass instantly).
clock: Callable[[], float] = time.monotonic
sleep: Callable[[float], None] = time.sleep

Action = Literal["switchover", "failover", "group switchover"]


def _client(api: str | None, token: str | None) -> ApiClient:
    return client_factory(resolve_api_url(api), resolve_token(token), HTTP_TIMEOUT_S)


# -- errors -------------------------------------------------------------------------------------


def report_unreachable(err: Console, exc: ApiUnreachable) -> int:
    err.print(f"[red]cannot reach the Tandem API at {escape(exc.url)}: {escape(exc.reason)}[/]")
    err.print(
        "give --api or set TANDEM_API_URL (is `tandem up` or the orchestrator running?)",
        markup=False,
    )
    return EXIT_UNREACHABLE


def report_api_error(err: Console, exc: ApiError, what: str) -> int:
    """Print the API's detail; 2 for a refusal (4xx), 1 for the API's own failure."""
    err.print(f"[red]{escape(what)}: {exc.status} {escape(exc.detail)}[/]")
    if exc.status in (401, 403):
        err.print("give a token allowed to do this with --token or TANDEM_API_TOKEN", markup=False)
    return EXIT_REFUSED if 400 <= exc.status < 500 else EXIT_FAILED


def run_change(
    console: Console,
    err: Console,
    what: str,
    call: Callable[[ApiClient], str],
    api: str | None,
    token: str | None,
) -> int:
    """Run one REST mutation and print what it answered (``call`` makes the request and
    returns the line to print); a refusal or an unreachable API gets its exit code."""
    try:
        with _client(api, token) as client:
            try:
                text = call(client)
            except ApiError as exc:
                return report_api_error(err, exc, f"{what} refused")
    except ApiUnreachable as exc:
        return report_unreachable(err, exc)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


# -- status -------------------------------------------------------------------------------------


def run_status(
    console: Console, err: Console, *, api: str | None, token: str | None, cluster: str | None
) -> int:
    try:
        with _client(api, token) as client:
            clusters = [client.cluster(cluster)] if cluster else client.clusters()
            sagas: dict[str, Saga] = {}
            for c in clusters:
                if c.saga:
                    try:
                        sagas[c.saga] = client.saga(c.saga)
                    except ApiError:
                        pass  # shown by id only
    except ApiUnreachable as exc:
        return report_unreachable(err, exc)
    except ApiError as exc:
        return report_api_error(err, exc, "status")
    render_status(console, clusters, sagas)
    return EXIT_OK


# -- waiting for a saga ---------------------------------------------------------------------


@dataclass(frozen=True)
class WaitResult:
    #: The last state seen (None: never read).
    saga: Saga | None
    timed_out: bool
    #: The last transient error when timed out (API unreachable or failing meanwhile).
    error: str | None = None


def wait_for_saga(
    fetch: Callable[[str], Saga],
    saga_id: str,
    timeout_s: float,
    *,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_update: Callable[[Saga], None] | None = None,
) -> WaitResult:
    """Poll ``fetch(saga_id)`` every ``interval_s`` until the saga ends or ``timeout_s`` passes.

    An unreachable API or a 5xx (e.g. while another orchestrator takes the lead) is retried
    until the deadline; a 4xx is raised.
    """
    deadline = clock() + timeout_s
    last: Saga | None = None
    error: str | None = None
    while True:
        try:
            saga = fetch(saga_id)
        except ApiUnreachable as exc:
            error = str(exc)
        except ApiError as exc:
            if exc.status < 500:
                raise
            error = f"{exc.status} {exc.detail}"
        else:
            error = None
            last = saga
            if on_update is not None:
                on_update(saga)
            if saga.finished:
                return WaitResult(saga, timed_out=False)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(last, timed_out=True, error=error)
        sleep(min(interval_s, remaining))


_STEP_MARK = {
    "completed": "[green]ok[/]",
    "failed": "[red]FAILED[/]",
    "compensated": "[yellow]undone[/]",
    "running": "[cyan]running[/]",
    "pending": "[dim]not run[/]",
}


def print_steps(console: Console, saga: Saga) -> None:
    for position, step in enumerate(saga.steps, 1):
        where = f" on {step.node}" if step.node else ""
        mark = _STEP_MARK.get(step.state, escape(step.state))
        why = f": {escape(step.reason)}" if step.reason else ""
        console.print(
            f"  {position}. {escape(step.name)}{escape(where)}  {mark}{why}", highlight=False
        )


def follow_saga(
    console: Console, err: Console, client: ApiClient, saga_id: str, timeout_s: float, label: str
) -> int:
    try:
        with console.status(escape(f"{label}: saga {saga_id} accepted"), spinner="dots") as spinner:
            result = wait_for_saga(
                client.saga,
                saga_id,
                timeout_s,
                interval_s=POLL_INTERVAL_S,
                sleep=sleep,
                clock=clock,
                on_update=lambda saga: spinner.update(escape(describe_progress(saga))),
            )
    except ApiError as exc:
        report_api_error(err, exc, f"lost track of saga {saga_id}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print(f"stopped waiting; saga {saga_id} goes on (see `tandem status`)", markup=False)
        return EXIT_INTERRUPTED
    saga = result.saga
    if saga is not None:
        print_steps(console, saga)
    if result.timed_out:
        where = f" ({describe_progress(saga)})" if saga else ""
        err.print(
            f"[red]timed out after {timeout_s:g} s waiting for saga {escape(saga_id)}"
            f"{escape(where)}[/]"
        )
        if result.error:
            err.print(f"last error: {result.error}", markup=False)
        err.print("it may still finish: see `tandem status`", markup=False)
        return EXIT_FAILED
    assert saga is not None  # not timed out: the saga ended
    if saga.state == "completed":
        target = f": {saga.to_node} is Active" if saga.to_node and "group" not in saga.kind else ""
        console.print(f"[green]{escape(label)} completed{escape(target)}[/]")
        return EXIT_OK
    if saga.state == "needs_operator":
        err.print(
            f"[red]{escape(label)} stopped past the role change and needs an operator: "
            f"{escape(saga.reason or 'no reason given')}[/]"
        )
        return EXIT_FAILED
    err.print(f"[red]{escape(label)} failed: {escape(saga.reason or 'no reason given')}[/]")
    return EXIT_FAILED


# -- switchover, failover, group switchover ---------------------------------------------------


def _submit(
    client: ApiClient, action: Action, target: str, to: str | None, reason: str
) -> Accepted:
    if action == "switchover":
        return client.switchover(target, to, reason)
    if action == "failover":
        return client.failover(target, to, reason)
    return client.group_switchover(target, reason)


def run_action(
    console: Console,
    err: Console,
    action: Action,
    target: str,
    *,
    api: str | None,
    token: str | None,
    to: str | None = None,
    reason: str | None = None,
    wait: bool = True,
    timeout_s: float = 300.0,
    confirm: bool = True,
) -> int:
    if action == "failover" and not confirm:
        err.print("[red]a failover needs --confirm[/]")
        err.print(
            "it makes a Passive the Active without the current Active's agreement;"
            " check that the Active is really down",
            markup=False,
        )
        return EXIT_REFUSED
    label = f"{action} of {target}"
    try:
        with _client(api, token) as client:
            try:
                accepted = _submit(client, action, target, to, reason or DEFAULT_REASON)
            except ApiError as exc:
                return report_api_error(err, exc, f"{label} refused")
            console.print(f"{escape(label)} accepted: saga {escape(accepted.saga_id)}")
            if not wait:
                follow = accepted.status_url or f"/api/v1/sagas/{accepted.saga_id}"
                console.print(f"follow it at {follow}", markup=False, highlight=False)
                return EXIT_OK
            return follow_saga(console, err, client, accepted.saga_id, timeout_s, label)
    except ApiUnreachable as exc:
        return report_unreachable(err, exc)
