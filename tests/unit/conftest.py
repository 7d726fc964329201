"""Unit tests read no login from the environment: the session's bus server (tests/conftest.py)
puts the suite's admin login there for the tests that talk to it."""

from __future__ import annotations

import pytest

_LOGIN = ("TANDEM_BUS_USER", "TANDEM_BUS_PASSWORD", "TANDEM_BUS_TLS_CA_FILE")


@pytest.fixture(autouse=True)
def _no_bus_login_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LOGIN:
        monkeypatch.delenv(name, raising=False)
