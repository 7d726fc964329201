"""``hook``: a command run once per notification, like Patroni's ``on_role_change``.

The argv is run without a shell, in a session of its own, with a small environment: ``PATH``,
``HOME``, ``LANG`` and the ``TANDEM_*`` variables of the notification (never the notifier's
own, which hold its bus login); the JSON body on stdin. Past ``timeout_s`` its whole process
group is killed. Exit 0 is a delivery; anything else an attempt that failed (retried), its
exit status recorded. The notifier never runs two hooks of one cluster on one route at once,
and a hook dies with the notifier (SIGKILL too): the run a restarted notifier makes again
never overlaps an orphan of the killed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from tandem.events.catalog.notifications import ChannelKind
from tandem.events.parent_death import parent_death
from tandem.notifier.channels.base import Context, DeliveryError, Sent, wire_body
from tandem.notifier.config import HookChannel
from tandem.notifier.notification import Notification

log = logging.getLogger(__name__)

_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
_OUTPUT_KEPT = 500


def hook_env(n: Notification, ctx: Context) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED if k in os.environ}
    env.update(
        TANDEM_EVENT_TYPE=n.event.type,
        TANDEM_EVENT_ID=n.event.id,
        TANDEM_STREAM_SEQ=str(n.seq),
        TANDEM_CLUSTER=n.cluster,
        TANDEM_NODE=n.node,
        TANDEM_ROUTE=ctx.route,
        TANDEM_NOTIFICATION_KIND=n.kind,
        TANDEM_ALERT_CODE=n.code,
        TANDEM_ALERT_SEVERITY=n.severity.value,
        TANDEM_ALERT_STATUS=n.status,
        TANDEM_ALERT_FINGERPRINT=n.fingerprint,
        TANDEM_ALERT_SUBJECT=n.subject,
        TANDEM_ALERT_MESSAGE=n.summary,
    )
    for key, value in n.role.items():
        env[f"TANDEM_ROLE_{key.upper()}"] = value
    return env


class HookSender:
    kind: ChannelKind = "hook"

    def __init__(self, channel: HookChannel) -> None:
        self.channel = channel

    async def send(self, n: Notification, ctx: Context) -> Sent:
        c = self.channel
        body = wire_body(n, ctx)
        try:
            proc = await asyncio.create_subprocess_exec(
                *c.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=hook_env(n, ctx),
                start_new_session=True,
                # SIGKILL with the notifier, even by SIGKILL: the run a restarted notifier makes
                # again never overlaps an orphan of the killed one.
                preexec_fn=parent_death(signal.SIGKILL),
            )
        except OSError as exc:
            raise DeliveryError(f"{c.argv[0]}: cannot be run: {exc.strerror or exc}") from None
        try:
            output, _ = await asyncio.wait_for(proc.communicate(body), c.timeout_s)
        except TimeoutError:
            _kill_group(proc.pid)
            await asyncio.wait_for(proc.wait(), 10)
            raise DeliveryError(
                f"{c.argv[0]}: still running after {c.timeout_s:g}s: killed", proc.returncode
            ) from None
        except BaseException:
            _kill_group(proc.pid)  # stopped: the hook does not outlive its run
            raise
        code = proc.returncode if proc.returncode is not None else -1
        said = output.decode(errors="replace").strip()[-_OUTPUT_KEPT:]
        if code != 0:
            raise DeliveryError(f"{c.argv[0]}: exit {code}: {said}", code)
        if said:
            log.info("hook %s (%s): %s", c.argv[0], ctx.route, said)
        return Sent(f"exit 0{': ' + said if said else ''}", 0)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
