"""The dns_updater's config file and TSIG key file: what is accepted, and errors that name the
file and the field. Also the update message built from them."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import dns.rdatatype
import pytest

from tandem.dns_updater.config import Server, load_config
from tandem.dns_updater.settings import load
from tandem.dns_updater.tsigkey import KeyFileError, load_key, parse_key
from tandem.dns_updater.update import build_update, split_families
from tandem.events.settings import SettingsError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dns_updater.toml"
SECRET = "YKrMufKCkmIA0tP8iTqTQdzz7JS46Dikeh2XIFbby7U="
KEY = f'key "tandem-dr" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'

UPDATE = '[update]\nservers = [{ address = "127.0.0.1", port = 5353 }]\n'
NAME = """[[names]]
cluster = "alpha"
name = "app.dr.tandem.test"
zone = "dr.tandem.test"
addresses = { primary = "10.0.0.5", secondary = ["10.1.0.5", "2001:DB8:1:0::5"] }
"""


def write(tmp_path: Path, text: str, key: str | None = KEY) -> Path:
    if key is not None:
        (tmp_path / "tsig.key").write_text(key)
    path = tmp_path / "dns.toml"
    path.write_text(text)
    return path


def error(path: Path) -> str:
    with pytest.raises(SettingsError) as info:
        load_config(path)
    return str(info.value)


def test_the_example_is_valid(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "dns_updater.toml")
    (tmp_path / "dns-updater.key").write_text(KEY)
    config = load_config(tmp_path / "dns_updater.toml")
    assert [n.cluster for n in config.names] == ["billing", "crm"]
    assert config.key_for(config.names[0]).name == "tandem-dr"
    assert [str(s) for s in config.verify_servers] == ["192.0.2.53:53", "198.51.100.53:53"]


def test_a_minimal_file_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME))
    [entry] = config.names
    assert entry.name == "app.dr.tandem.test." and entry.zone == "dr.tandem.test."
    assert entry.display_name == "app.dr.tandem.test"
    assert entry.ttl == 60
    assert entry.addresses == {"primary": ["10.0.0.5"], "secondary": ["10.1.0.5", "2001:db8:1::5"]}
    assert config.verify_servers == config.update.servers  # default: the update servers
    assert config.update.protocol == "tcp" and config.retry.attempts >= 1
    # The key path was relative to the config file, wherever the service was started from.
    assert config.key_for(entry).path == tmp_path / "tsig.key"
    assert config.clusters() == {"alpha": [entry]}


def test_a_missing_key_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "missing.key"\n' + UPDATE + NAME, key=None)
    text = error(path)
    assert str(path) in text and "key_file" in text
    assert f"{tmp_path / 'missing.key'}: no such file" in text


def test_a_missing_key_file_of_a_name_names_that_name(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME + 'key_file = "nope.key"\n')
    text = error(path)
    assert str(path) in text and "names.0.key_file" in text and "no such file" in text


def test_a_bad_address_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME.replace("10.0.0.5", "10.0.0.x")
    )
    text = error(path)
    assert str(path) in text and "names.0.addresses.primary" in text
    assert "'10.0.0.x' is not an IPv4 or IPv6 address" in text


def test_a_bad_server_address_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE.replace("127.0.0.1", "ns1") + NAME)
    text = error(path)
    assert str(path) in text and "update.servers.0.address" in text


def test_an_unknown_field_names_the_file_and_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME + "ttl_s = 30\n")
    text = error(path)
    assert str(path) in text and "names.0.ttl_s" in text and "Extra inputs" in text
    path = write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + "timeout = 3\n" + NAME)
    assert "update.timeout" in error(path)


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        (('dr.tandem.test"\naddr', 'other.test"\naddr'), "names.0", "is not in zone"),
        (('cluster = "alpha"', 'cluster = "Alpha!"'), "names.0.cluster", "invalid"),
        (("primary =", "Primary ="), "names.0.addresses.Primary", "invalid"),
        (('name = "app.dr.tandem.test"', 'name = "a..b"'), "names.0.name", "not a valid DNS"),
        (("addresses = {", "ttl = -1\naddresses = {"), "names.0.ttl", "greater than or equal"),
        (('secondary = ["10.1.0.5", "2001:DB8:1:0::5"]', "secondary = []"), "secondary", "least"),
    ],
)
def test_bad_name_entries(
    tmp_path: Path, change: tuple[str, str], field: str, problem: str
) -> None:
    old, new = change
    assert old in NAME
    text = error(write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME.replace(old, new)))
    assert field in text and problem in text


def test_a_name_without_any_key_and_a_name_twice(tmp_path: Path) -> None:
    text = error(write(tmp_path, UPDATE + NAME))
    assert "names.0.key_file: no TSIG key for app.dr.tandem.test." in text
    text = error(write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME + NAME))
    assert "names.1.name: app.dr.tandem.test. is configured more than once" in text


def test_retry_and_update_sections(tmp_path: Path) -> None:
    text = error(write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + "[retry]\nmax_s = 0.1\n"))
    assert "retry" in text and "max_s (0.1) must not be below initial_s" in text
    text = error(write(tmp_path, 'key_file = "tsig.key"\n' + NAME))
    assert "update: Field required" in text
    text = error(write(tmp_path, 'key_file = "tsig.key"\n[update]\nservers = []\n'))
    assert "update.servers" in text


def test_not_toml_and_no_file(tmp_path: Path) -> None:
    assert "not valid TOML" in error(write(tmp_path, "key_file = \n"))
    assert "no such file" in error(tmp_path / "absent.toml")


def test_the_settings_check_the_file_before_the_service_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TANDEM_DNS_UPDATER_CONFIG", raising=False)
    with pytest.raises(SettingsError) as info:
        load(config=tmp_path / "absent.toml")
    assert f"{tmp_path / 'absent.toml'}: no such file" in str(info.value)
    assert load().config is None  # no file: the service moves nothing


# --- TSIG key files ---------------------------------------------------------------------------


def test_a_key_as_tsig_keygen_writes_it(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(KEY)
    key = load_key(tmp_path / "k")
    assert (key.name, key.algorithm) == ("tandem-dr", "hmac-sha256")
    assert key.key.secret == base64.b64decode(SECRET)
    assert SECRET not in repr(key) and SECRET not in str(key)


def test_comments_and_an_unquoted_name_are_accepted() -> None:
    text = (
        "# made by hand\n/* a\nblock */ key other-key { // the key\n"
        f'  algorithm HMAC-SHA512; secret "{SECRET}"; }};\n'
    )
    key = parse_key(text, Path("k"))
    assert (key.name, key.algorithm) == ("other-key", "hmac-sha512")


def test_a_secret_holding_comment_markers_is_read_whole() -> None:
    secret = "YKrMufKCkmIA0tP8iTqTQdzz7JS46Dikeh2XIF//y7U="  # base64 may hold "//"
    key = parse_key(f'key "k" {{ algorithm hmac-sha256; secret "{secret}"; }}; // end', Path("k"))
    assert key.key.secret == base64.b64decode(secret)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no key statement"),
        (KEY + KEY.replace("tandem-dr", "second"), "2 keys (tandem-dr, second)"),
        (KEY.replace("hmac-sha256", "hmac-foo"), "algorithm 'hmac-foo' is not supported"),
        (KEY.replace("\talgorithm hmac-sha256;\n", ""), "has no algorithm"),
        (KEY.replace(f'\tsecret "{SECRET}";\n', ""), "has no secret"),
        (KEY.replace(SECRET, "not base64!"), "the secret is not valid base64"),
    ],
)
def test_bad_key_files(text: str, problem: str) -> None:
    with pytest.raises(KeyFileError) as info:
        parse_key(text, Path("/etc/k.key"))
    assert str(info.value).startswith("/etc/k.key: ") and problem in str(info.value)
    assert SECRET not in str(info.value)


def test_a_bad_key_file_in_the_config_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME, key="key x { };")
    text = error(path)
    assert str(path) in text and "key_file" in text and "has no algorithm" in text


# --- The update message -----------------------------------------------------------------------


def test_the_update_replaces_a_and_aaaa_and_is_signed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'key_file = "tsig.key"\n' + UPDATE + NAME))
    [entry] = config.names
    update = build_update(
        entry.zone, entry.name, entry.ttl, entry.addresses["secondary"], config.key_for(entry)
    )
    assert update.keyname is not None and update.keyname.to_text() == "tandem-dr."
    changes = [
        (r.name.to_text(), r.rdtype, r.ttl, sorted(x.to_text() for x in r)) for r in update.update
    ]
    assert changes == [
        ("app.dr.tandem.test.", dns.rdatatype.A, 0, []),
        ("app.dr.tandem.test.", dns.rdatatype.AAAA, 0, []),
        ("app.dr.tandem.test.", dns.rdatatype.A, 60, ["10.1.0.5"]),
        ("app.dr.tandem.test.", dns.rdatatype.AAAA, 60, ["2001:db8:1::5"]),
    ]


def test_addresses_split_by_family_and_servers_print_as_host_port() -> None:
    assert split_families(["2001:db8::1", "10.0.0.2", "10.0.0.1", "10.0.0.2"]) == (
        ["10.0.0.1", "10.0.0.2"],
        ["2001:db8::1"],
    )
    assert str(Server(address="::1", port=5353)) == "[::1]:5353"
    assert str(Server(address="127.0.0.1")) == "127.0.0.1:53"
