"""The notifier's decisions without a bus: routes' matchers, de-duplication by fingerprint,
repeat interval, acknowledgements, resolved notifications, the rate limit, folding the same
event twice; its config file's errors and secrets; the mail's subject."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier_rig import cleared, raised, role_changed, silence
from tandem.events.catalog import AlertAcknowledged
from tandem.events.catalog.alerts import AlertAcknowledgedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.settings import SettingsError
from tandem.notifier.book import Book
from tandem.notifier.config import NotifierConfig, Route, load_config
from tandem.notifier.notification import Notification, notification_of
from tandem.notifier.payloads import mail_subject, webhook_body
from tandem.notifier.policy import ROUTE_FAILING, Policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "notifier.toml"


def route(name: str = "r", **kw: object) -> Route:
    return Route.model_validate({"name": name, "channel": {"type": "file", "path": "/x"}, **kw})


def config(*routes: Route, groups: dict[str, list[str]] | None = None) -> NotifierConfig:
    return NotifierConfig(routes=list(routes), groups=groups or {})


def decide(policy: Policy, book: Book, r: Route, event: object, when: datetime) -> str | None:
    before = book.fold(event)  # type: ignore[arg-type]
    n = notification_of(event, 1)  # type: ignore[arg-type]
    assert n is not None
    if not policy.selects(r, n):
        return "not selected"
    why = policy.held_back(r, n, before, when)
    if why is None and n.status == "firing":
        book.sent(n.fingerprint, r.name, when)
    return why


NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_a_firing_alert_raised_again_waits_for_the_repeat_interval_and_an_ack_stops_it() -> None:
    r = route(repeat_interval_s=600)
    book = Book(None)
    policy = Policy(config(r), book)
    assert decide(policy, book, r, raised(), NOW) is None
    again = decide(policy, book, r, raised(), NOW + timedelta(seconds=60))
    assert again is not None and again.startswith("sent 60s ago")
    assert decide(policy, book, r, raised(), NOW + timedelta(seconds=601)) is None
    fingerprint = raised().fingerprint
    ack = AlertAcknowledged(
        cluster="demo",
        node="orchestrator",
        payload=AlertAcknowledgedPayload(fingerprint=fingerprint, by="operator:ab12cd"),
    )
    book.fold(ack)
    assert decide(policy, book, r, raised(), NOW + timedelta(hours=5)) == "acknowledged"
    assert decide(policy, book, r, cleared(), NOW + timedelta(hours=5)) is None
    # A new firing after the clear is not acknowledged; the old ack folded again (a replay
    # after a restart) does not acknowledge it either.
    assert decide(policy, book, r, raised(), NOW + timedelta(hours=6)) is None
    book.fold(ack)
    assert not book.alerts[fingerprint].acked


def test_resolved_goes_only_to_the_routes_its_firing_went_to() -> None:
    mail, chat = route("mail", match={"codes": ["app.*"]}), route("chat")
    book = Book(None)
    policy = Policy(config(mail, chat), book)
    assert decide(policy, book, chat, cleared(), NOW) == "it was not firing"
    event = raised("disk.full")
    before = book.fold(event)
    n = notification_of(event, 1)
    assert n is not None and not policy.selects(mail, n) and policy.selects(chat, n)
    assert policy.held_back(chat, n, before, NOW) is None
    book.sent(n.fingerprint, "chat", NOW)
    done = cleared("disk.full")
    before = book.fold(done)
    resolved = notification_of(done, 2)
    assert resolved is not None
    assert policy.held_back(chat, resolved, before, NOW) is None
    assert policy.held_back(mail, resolved, before, NOW) == "its firing was not sent on this route"


def test_folding_the_same_event_again_gives_the_same_before() -> None:
    book = Book(None)
    event = raised()
    first = book.fold(event)
    assert first is not None and not first.firing
    assert book.fold(event) == first  # delivered again after a restart: same decision


def test_matchers_severity_cluster_group_code_kind_and_route_failing_about_itself() -> None:
    critical = route("pager", match={"severity": "critical", "kinds": ["alert"]})
    erp = route("erp", match={"groups": ["erp"], "codes": ["saga.*"]})
    book = Book(None)
    policy = Policy(config(critical, erp, groups={"erp": ["erp-db"]}), book)

    def n(event: Event) -> Notification:
        out = notification_of(event, 1)
        assert out is not None
        return out

    assert policy.selects(critical, n(raised()))
    assert not policy.selects(critical, n(raised(severity=Severity.WARNING)))
    assert not policy.selects(critical, n(role_changed(3)))
    assert policy.selects(erp, n(raised("saga.stuck", cluster="erp-db")))
    assert not policy.selects(erp, n(raised("saga.stuck")))
    assert not policy.selects(erp, n(raised("dns.stale", cluster="erp-db")))
    failing = n(raised(ROUTE_FAILING, cluster="tandem", node="notifier", subject="pager"))
    assert not policy.selects(critical, failing)


def test_the_rate_limit_holds_back_past_its_max_and_the_next_one_says_how_many() -> None:
    r = route("mail", rate_limit={"max": 3, "per_s": 60})
    book = Book(None)
    policy = Policy(config(r), book)
    outcomes = [decide(policy, book, r, raised(f"c{i}"), NOW) for i in range(5)]
    assert outcomes[:3] == [None, None, None]
    assert all(o is not None and o.startswith("rate limit") for o in outcomes[3:])
    assert policy.take_held(r, "demo") == 2 and policy.take_held(r, "demo") == 0
    assert decide(policy, book, r, raised("c9"), NOW + timedelta(seconds=61)) is None
    # Hook and file routes have no limit unless given one; email and webhook do.
    assert route().limit is None
    mail = Route.model_validate({"name": "m", "channel": {"type": "webhook", "url": "http://x"}})
    assert mail.limit is not None and mail.limit.max == 10


def test_a_silence_matches_labels_until_it_ends() -> None:
    book = Book(None)
    book.fold(silence({"cluster": "demo", "code": "app.*"}, seconds=60))
    n = notification_of(raised(), 1)
    assert n is not None
    now = datetime.now(UTC)
    assert book.silenced_by(n.silence_labels(), now) is None  # "app.*" is not a pattern
    book.fold(silence({"cluster": "demo", "severity": "critical"}, seconds=60, silence_id="s2"))
    assert book.silenced_by(n.silence_labels(), now) == "s2"
    assert book.silenced_by(n.silence_labels(), now + timedelta(seconds=61)) is None
    assert "s2" not in book.silences  # expired: forgotten


def test_the_example_config_loads_and_keeps_its_secrets_out_of_reprs(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "notifier.toml")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "smtp-password").write_text("hunter2-smtp\n")
    (tmp_path / "secrets" / "webhook-key").write_text("k3y\n")
    loaded = load_config(tmp_path / "notifier.toml")
    assert [r.channel.type for r in loaded.routes] == ["email", "webhook", "hook", "file"]
    mail = loaded.routes[0].channel
    assert mail.type == "email" and mail.password_file is not None
    assert mail.password_file.get_secret_value() == "hunter2-smtp"
    assert "hunter2" not in repr(loaded) and "k3y" not in repr(loaded)


@pytest.mark.parametrize(
    ("route_toml", "field"),
    [
        ('channel = { type = "email", host = "h", from = "a@b.c", to = [] }', "channel.email.to"),
        ('channel = { type = "pager" }', "routes.0.channel"),
        (
            'channel = { type = "email", host = "h", from = "a@b.c", to = ["x"], username = "u" }',
            "username and password_file go together",
        ),
        ('match = { groups = ["nope"] }\nchannel = { type = "hook", argv = ["x"] }', "nope"),
        ('retries = -1\nchannel = { type = "hook", argv = ["x"] }', "routes.0.retries"),
    ],
)
def test_a_bad_config_names_the_file_and_the_field(
    tmp_path: Path, route_toml: str, field: str
) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(f'[[routes]]\nname = "r"\n{route_toml}\n')
    with pytest.raises(SettingsError) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_subjects_and_the_webhook_body_of_each_kind() -> None:
    firing = notification_of(raised(), 7)
    assert firing is not None
    assert (
        mail_subject(firing) == "[Tandem CRITICAL] demo/primary: demo app does not answer on :8081"
    )
    change = notification_of(role_changed(4), 8)
    assert change is not None
    assert mail_subject(change).startswith("[Tandem ROLE] demo: primary is Active (epoch 4")
    body = webhook_body(change, receiver="r", external_url="")
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["alertname"] == (
        "role.RoleChanged"
    )
    assert body["alerts"][0]["endsAt"] == body["alerts"][0]["startsAt"]
    assert body["tandem"]["stream_seq"] == 8 and body["tandem"]["status"] == "event"


def test_the_notifier_identity_publishes_its_outcomes_and_alerts_and_owns_one_consumer() -> None:
    from tandem.events.bus_identities import NOTIFIER, notifier_permissions

    p = notifier_permissions()
    for own in ("NotificationDelivered", "NotificationFailed", "AlertRaised", "AlertCleared"):
        assert f"tandem.evt.*.{own}" in p.publish
    assert not any(s.endswith((".RoleChanged", ".SilenceCreated")) for s in p.publish)
    consumer_rights = [s for s in p.publish if s.startswith("$JS.API.CONSUMER.")]
    assert consumer_rights and all(f".TANDEM_EVENTS.{NOTIFIER}" in s for s in consumer_rights)
    assert f"$JS.API.CONSUMER.DELETE.TANDEM_EVENTS.{NOTIFIER}" in p.publish
