"""The dns_updater's ``[reconcile]`` table, and key files read again when they change (a
corrected key is used without a restart; a broken one keeps the key in force)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tandem.dns_updater.config import load_config
from tandem.dns_updater.tsigkey import KeyFiles, load_key
from tandem.events.settings import SettingsError

FIRST = "YKrMufKCkmIA0tP8iTqTQdzz7JS46Dikeh2XIFbby7U="
SECOND = "c2Vjb25kIHNlY3JldCBvZiB0aGUgc2FtZSBsZW5ndGghIQ=="
CONFIG = """key_file = "tsig.key"
[update]
servers = [{ address = "127.0.0.1", port = 5353 }]
[[names]]
cluster = "alpha"
name = "app.dr.tandem.test"
zone = "dr.tandem.test"
addresses = { primary = "10.0.0.5" }
"""


def key_text(secret: str) -> str:
    return f'key "tandem-dr" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'


def test_reconcile_defaults_and_values(tmp_path: Path) -> None:
    (tmp_path / "tsig.key").write_text(key_text(FIRST))
    path = tmp_path / "dns.toml"
    path.write_text(CONFIG)
    default = load_config(path).reconcile
    assert (default.at_start, default.interval_s) == (True, 60.0)
    path.write_text(CONFIG + "[reconcile]\nat_start = false\ninterval_s = 0\n")
    assert load_config(path).reconcile.interval_s == 0
    path.write_text(CONFIG + "[reconcile]\ninterval_s = -1\n")
    with pytest.raises(SettingsError, match=r"reconcile\.interval_s"):
        load_config(path)


def test_a_changed_key_file_is_read_again_and_a_broken_one_keeps_the_key(tmp_path: Path) -> None:
    path = tmp_path / "tsig.key"
    path.write_text(key_text(FIRST))
    first = load_key(path)
    keys = KeyFiles()
    assert keys.current(first) is first
    assert keys.current(first) is first  # unchanged: not read again

    path.write_text(key_text(SECOND))
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    fresh = keys.current(first)
    assert fresh.key.secret != first.key.secret and fresh.name == "tandem-dr"
    assert keys.current(first) is fresh

    path.write_text("not a key")
    os.utime(path, ns=(2, 2))
    assert keys.current(first) is fresh  # in force until a usable file comes
    path.unlink()
    assert keys.current(first) is fresh
