from __future__ import annotations

from pathlib import Path

import pytest

from tandem.events.connection import connect_options
from tandem.events.settings import SettingsError, load_bus_settings, load_stream_settings


def test_servers_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_BUS_SERVERS", "nats://a:4222, nats://b:4222")
    assert load_bus_settings().servers == ["nats://a:4222", "nats://b:4222"]


def test_a_bad_url_names_the_field_and_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_BUS_SERVERS", "http://a:4222")
    with pytest.raises(SettingsError) as info:
        load_bus_settings()
    text = str(info.value)
    assert "environment" in text and "servers" in text and "TANDEM_BUS_SERVERS" in text
    assert "'http://a:4222' is not a nats://" in text


def test_password_without_user_is_refused() -> None:
    with pytest.raises(SettingsError, match="password is set but user is not"):
        load_bus_settings(password="secret")


def test_missing_credentials_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.creds"
    with pytest.raises(SettingsError, match=f"creds_file: {missing} is not a readable file"):
        load_bus_settings(creds_file=missing)


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="replica"):
        load_stream_settings(replica=3)


def test_stream_replicas_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_STREAMS_REPLICAS", "0")
    with pytest.raises(SettingsError, match="TANDEM_STREAMS_REPLICAS"):
        load_stream_settings()


def test_connect_options_carry_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    creds.write_text("x")
    opts = connect_options(
        load_bus_settings(user="op", password="pw", token="tk", creds_file=creds)
    )
    assert opts["user"] == "op" and opts["password"] == "pw" and opts["token"] == "tk"
    assert opts["user_credentials"] == str(creds)
    assert opts["max_reconnect_attempts"] == -1
