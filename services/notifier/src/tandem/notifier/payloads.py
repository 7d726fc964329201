"""The bodies channels send: Alertmanager's webhook JSON (version 4) and a readable mail.

The JSON is what the webhook posts, what a hook reads on stdin and what a ``file`` route
appends; it adds a ``tandem`` object (event id, type, stream sequence) to Alertmanager's
fields, so an Alertmanager receiver reads it unchanged and a Tandem-aware one can de-duplicate
by event id.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tandem.notifier.notification import Notification

#: Alertmanager's "no end yet".
ZERO_TIME = "0001-01-01T00:00:00Z"

#: What to do, by code prefix (the first that matches).
HINTS = (
    ("notifier.route_failing", "check the route's channel (server, credentials) and the log"),
    ("saga.stuck", "fix the cause, then `tandem saga resume <saga id>`"),
    ("dns.", "check the DNS servers and the key, then `tandem dns reconcile {cluster}`"),
    ("fence.", "check the old Active is really stopped, then `tandem status --cluster {cluster}`"),
    ("role.NodeSelfFenced", "see `tandem status --cluster {cluster}`: who serves now"),
    ("role.", "nothing, unless it was unexpected: `tandem history --cluster {cluster}`"),
)
DEFAULT_HINT = (
    "see `tandem status --cluster {cluster}`; `tandem alerts ack {fingerprint}` once handled"
)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


#: An alert that has ended asks for nothing; the one thing worth a look is why it fired.
RESOLVED_HINT = "nothing: it has ended; `tandem alerts list --state cleared --cluster {cluster}`"


def hint(n: Notification) -> str:
    if n.status == "resolved":
        return RESOLVED_HINT.format(cluster=n.cluster)
    text = next((h for prefix, h in HINTS if n.code.startswith(prefix)), DEFAULT_HINT)
    return text.format(cluster=n.cluster, fingerprint=n.fingerprint)


def link(n: Notification, base: str) -> str:
    if not base:
        return ""
    return f"{base.rstrip('/')}/api/v1/alerts?cluster={n.cluster}"


def alert_annotations(n: Notification) -> dict[str, str]:
    out = {"summary": n.summary, "action": hint(n)}
    if n.details:
        out["details"] = json.dumps(n.details, sort_keys=True, default=str)
    return out


def webhook_body(
    n: Notification, *, receiver: str, external_url: str, held_back: int = 0
) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) of one notification, plus ``tandem``."""
    labels = n.labels()
    status = "resolved" if n.status == "resolved" else "firing"
    ended = n.ended
    alert = {
        "status": status,
        "labels": labels,
        "annotations": alert_annotations(n),
        "startsAt": iso(n.since),
        "endsAt": iso(ended) if ended is not None else ZERO_TIME,
        "generatorURL": link(n, external_url),
        "fingerprint": n.fingerprint,
    }
    group_labels = {"cluster": n.cluster, "alertname": n.code}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": external_url,
        "alerts": [alert],
        "tandem": {
            "event_id": n.event.id,
            "event_type": n.event.type,
            "stream_seq": n.seq,
            "kind": n.kind,
            "status": n.status,
            "occurred_at": iso(n.event.occurred_at),
            "held_back_by_rate_limit": held_back,
        },
    }


def body_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def mail_subject(n: Notification) -> str:
    where = f"{n.cluster}/{n.node}" + (f"/{n.subject}" if n.subject else "")
    if n.status == "resolved":
        return f"[Tandem RESOLVED] {where}: {n.code}"
    if n.kind == "role_change":
        return f"[Tandem ROLE] {n.cluster}: {n.summary}"
    return f"[Tandem {n.severity.value.upper()}] {where}: {n.summary}"


def mail_text(n: Notification, *, console_url: str, held_back: int = 0) -> str:
    """What, where, why, since when, what to do, and a link."""
    where = f"cluster {n.cluster}, node {n.node}" + (f", {n.subject}" if n.subject else "")
    if n.kind == "role_change":
        where = f"cluster {n.cluster} (reported by {n.node})"
    what = {
        "firing": f"alert {n.code} ({n.severity.value}) is firing",
        "resolved": f"alert {n.code} is resolved",
        "event": f"role change: {n.event.type}",
    }[n.status]
    lines = [
        f"What:   {what}",
        f"Where:  {where}",
        f"Why:    {n.summary}",
        f"Since:  {iso(n.since)}"
        + (f" (ended {iso(n.ended)})" if n.ended is not None and n.status == "resolved" else ""),
        f"Do:     {hint(n)}",
    ]
    url = link(n, console_url)
    if url:
        lines.append(f"Link:   {url}")
    if n.details:
        lines += ["", "Details:"] + [f"  {k}: {v}" for k, v in sorted(n.details.items())]
    if held_back:
        lines += [
            "",
            f"({held_back} earlier notifications of {n.cluster} were held back by the "
            "rate limit of this route)",
        ]
    lines += [
        "",
        f"Fingerprint {n.fingerprint}; event {n.event.id} ({n.event.type}, stream sequence "
        f"{n.seq}).",
    ]
    return "\n".join(lines) + "\n"
