"""The bus identities' permission table and the server's authorization block (issue 17);
what the server makes of them is in tests/integration/test_bus_permissions.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from tandem.events import subjects
from tandem.events.bus_auth import (
    authorization_config,
    bus_settings_for,
    hash_password,
    issue_passwords,
    read_bus_passwords,
    write_bus_passwords,
)
from tandem.events.bus_identities import (
    ADMIN,
    VIEWER,
    agent_user,
    bus_identities,
    journal_durable,
    permission_table_markdown,
)
from tandem.events.settings import SettingsError, load_bus_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def by_user(clusters: dict[str, list[str]]) -> dict[str, Any]:
    return {i.user: i for i in bus_identities(clusters)}


def test_an_agent_may_use_the_subjects_its_services_build() -> None:
    agent = by_user({"c1": ["a", "b"]})[agent_user("c1", "a")]
    p = agent.permissions
    assert subjects.heartbeat_subject("c1", "a") in p.publish
    assert subjects.journal_subject("c1") in p.publish
    assert subjects.events_filter("c1") in p.publish
    assert "$KV.tandem_leases." + subjects.node_lease_key("c1", "a") in p.publish
    assert subjects.commands_filter("c1", "a") in p.subscribe
    assert subjects.heartbeats_filter("c1") in p.subscribe
    assert f"{agent.inbox_prefix}.>" in p.subscribe
    assert "tandem.cmd.>" in p.publish_deny and "$KV.tandem_roles.>" in p.publish_deny


def test_the_replicators_subjects_and_durable_are_the_agents() -> None:
    from tandem.replicator.receiver import JournalReceiver
    from tandem.replicator.syncmode import direct_subject, stored_subject
    from tandem.replicator.syncproto import sync_subject

    p = by_user({"c1": ["a"]})[agent_user("c1", "a")].permissions
    assert direct_subject("c1") in p.publish and direct_subject("c1") in p.subscribe
    assert stored_subject("c1", "a") in p.publish and stored_subject("c1") in p.subscribe
    assert sync_subject("c1", "a") in p.subscribe
    receiver = JournalReceiver(
        None,  # type: ignore[arg-type]
        "c1",
        "a",
        None,  # type: ignore[arg-type]
        current_epoch=lambda: 0,
        applied_upto=lambda: (0, 0),
        on_stored=None,  # type: ignore[arg-type]
        report_refusal=None,  # type: ignore[arg-type]
    )
    assert receiver.durable == journal_durable("c1", "a")
    assert f"$JS.API.CONSUMER.MSG.NEXT.TANDEM_JOURNAL.{receiver.durable}" in p.publish


def test_the_agents_restart_requests_consumer_is_within_its_rights() -> None:
    from tandem.agent.restarts import durable_name

    p = by_user({"c1": ["a"]})[agent_user("c1", "a")].permissions
    assert "$JS.API.CONSUMER.DURABLE.CREATE.TANDEM_EVENTS.*" in p.publish
    assert "." not in durable_name("c1", "a")  # one subject token, matched by the '*'


def test_every_identity_has_its_own_inbox() -> None:
    identities = bus_identities({"c1": ["a", "b"], "c2": ["a"]})
    prefixes = [i.inbox_prefix for i in identities]
    assert len(set(prefixes)) == len(prefixes)
    for i in identities:
        load_bus_settings(inbox_prefix=i.inbox_prefix)  # a valid setting
        if i.permissions is not None:
            others = [f"{x}.>" for x in prefixes if x != i.inbox_prefix]
            assert not set(others) & set(i.permissions.subscribe), i.user


def test_a_node_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="named twice"):
        bus_identities({"c1": ["a", "a"]})


def test_the_viewer_publishes_only_jetstream_read_requests() -> None:
    p = by_user({})[VIEWER].permissions
    assert all(s.startswith(("$JS.API.", "$JS.FC.")) for s in p.publish)
    # Creates only unnamed (ephemeral) consumers: no durable of another identity is reachable.
    creates = [s for s in p.publish if ".CREATE." in s]
    assert creates == ["$JS.API.CONSUMER.CREATE.TANDEM_EVENTS"]
    assert not any(".DELETE." in s or "MSG.NEXT" in s or "$KV." in s for s in p.publish)


def test_the_server_config_holds_hashes_and_permissions() -> None:
    identities = bus_identities({"c1": ["a"]})
    passwords = issue_passwords(identities)
    text = authorization_config(identities, passwords, rounds=4)
    assert text.startswith("authorization ")
    users = {u["user"]: u for u in json.loads(text.removeprefix("authorization "))["users"]}
    assert set(users) == {i.user for i in identities}
    for user, entry in users.items():
        assert entry["password"].startswith("$2a$04$")
        assert bcrypt.checkpw(passwords[user].encode(), entry["password"].encode())
        assert passwords[user] not in text
    assert "permissions" not in users[ADMIN]
    agent = users[agent_user("c1", "a")]["permissions"]
    assert "tandem.hb.c1.a" in agent["publish"]["allow"]
    assert "tandem.cmd.>" in agent["publish"]["deny"]


def test_the_default_work_factor_is_production_grade() -> None:
    assert hash_password("x").startswith("$2a$11$")


def test_rotating_one_password_keeps_the_others(tmp_path: Path) -> None:
    identities = bus_identities({"c1": ["a"]})
    first = issue_passwords(identities)
    path = tmp_path / "bus-passwords.json"
    write_bus_passwords(path, first)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kept = read_bus_passwords(path)
    kept.pop(VIEWER)
    second = issue_passwords(identities, keep=kept)
    assert second[VIEWER] != first[VIEWER]
    assert {u: p for u, p in second.items() if u != VIEWER} == {
        u: p for u, p in first.items() if u != VIEWER
    }
    assert read_bus_passwords(tmp_path / "missing.json") == {}


def test_settings_for_an_identity_carry_its_login_and_inbox() -> None:
    viewer = by_user({})[VIEWER]
    settings = bus_settings_for(viewer, "pw", servers="nats://127.0.0.1:4222")
    assert settings.user == VIEWER and settings.inbox_prefix == "_INBOX.viewer"
    assert settings.password is not None and settings.password.get_secret_value() == "pw"
    with pytest.raises(SettingsError, match="inbox_prefix"):
        load_bus_settings(inbox_prefix="_INBOX.*")


def test_the_readme_shows_the_permission_table_as_built() -> None:
    text = README.read_text()
    begin, end = "<!-- bus-permissions:begin -->\n", "<!-- bus-permissions:end -->"
    shown = text.split(begin, 1)[1].split(end, 1)[0]
    assert shown == permission_table_markdown()
