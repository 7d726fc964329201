"""The vmware_bridge config and credentials files: what is accepted, and errors that name
the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.events.settings import SettingsError
from tandem.vmware_bridge.config import VmRef, load_config, load_credentials
from tandem.vmware_bridge.inventory import (
    DatastoreSpace,
    HostLoad,
    NoChoice,
    choose_datastore,
    choose_host,
)
from tandem.vmware_bridge.settings import VmwareBridgeSettings

GOOD = """
[vcenter]
host = "vc.example.com"
credentials_file = "creds.toml"

[vms.demo]
primary = "demo-primary"
secondary = "vm-42"
tertiary = "4210A1F2-0C4E-8D3E-6B4E-1F0C2B8E5A11"
"""


def write(tmp_path: Path, text: str, name: str = "bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_file_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    vc = config.vcenter
    assert (vc.host, vc.port, vc.verify_tls, vc.ca_file) == ("vc.example.com", 443, True, None)
    assert vc.task_timeout_s == 600
    # Relative to the config file's folder, not to the working directory.
    assert vc.credentials_file == tmp_path / "creds.toml"
    assert vc.address == "vc.example.com:443"


def test_the_example_file_loads() -> None:
    example = Path(__file__).parents[2] / "examples" / "vmware_bridge.toml"
    config = load_config(example)
    assert config.vcenter.verify_tls
    assert config.vcenter.credentials_file == example.parent / "vcenter-credentials.toml"
    assert config.vm_for("demo", "secondary") == VmRef("moref", "vm-1234", "demo/secondary")


def test_the_vm_map_and_identifiers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.vm_for("demo", "primary") == VmRef("name", "demo-primary", "demo/primary")
    assert config.vm_for("demo", "secondary") == VmRef("moref", "vm-42", "demo/secondary")
    assert config.vm_for("demo", "tertiary") == VmRef(
        "uuid", "4210a1f2-0c4e-8d3e-6b4e-1f0c2b8e5a11", "demo/tertiary"
    )
    assert config.vm_for(None, "demo/primary").value == "demo-primary"
    # Not a node of the request's cluster: the text is the VM itself.
    assert config.vm_for("other", "primary") == VmRef("name", "primary")
    assert config.vm_for("demo", "vm-7") == VmRef("moref", "vm-7")
    with pytest.raises(LookupError, match=r"demo/ghost: no such node in the \[vms\] map"):
        config.vm_for(None, "demo/ghost")
    assert "VM named 'demo-primary' (the VM of demo/primary)" in str(
        config.vm_for("demo", "primary")
    )


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('[vcenter]\ncredentials_file = "c"\n', "vcenter.host", "Field required"),
        ('[vcenter]\nhost = "h"\n', "vcenter.credentials_file", "Field required"),
        (
            '[vcenter]\nhost = "h"\nport = 70000\ncredentials_file = "c"\n',
            "vcenter.port",
            "less than or equal to 65535",
        ),
        (
            '[vcenter]\nhost = "h"\ncredentials_file = "c"\nverify_tls = "maybe"\n',
            "vcenter.verify_tls",
            "boolean",
        ),
        (
            '[vcenter]\nhost = "h"\ncredentials_file = "c"\ntask_timeout_s = 0\n',
            "vcenter.task_timeout_s",
            "greater than 0",
        ),
        (
            '[vcenter]\nhost = "h"\ncredentials_file = "c"\npasword = "x"\n',
            "vcenter.pasword",
            "Extra inputs are not permitted",
        ),
        ('[vcenter]\nhost = "h"\ncredentials_file = "c"\n[vms.Demo]\na = "x"\n', "vms", "Demo"),
        ('[vcenter]\nhost = "h"\ncredentials_file = "c"\n[vms.demo]\na = " "\n', "vms", "empty"),
        ("[vcentre]\n", "vcentre", "Extra inputs"),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, text: str, field: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert problem in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nothere\.toml: cannot be read"):
        load_config(tmp_path / "nothere.toml")
    bad = write(tmp_path, "[vcenter\nhost=", "bad.toml")
    with pytest.raises(SettingsError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)


def test_ca_file_must_exist_and_needs_verification(tmp_path: Path) -> None:
    base = '[vcenter]\nhost = "h"\ncredentials_file = "c"\nca_file = "ca.pem"\n'
    path = write(tmp_path, base)
    with pytest.raises(SettingsError, match=r"vcenter\.ca_file: .*ca\.pem is not a readable"):
        load_config(path)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert load_config(path).vcenter.ca_file == tmp_path / "ca.pem"
    path = write(tmp_path, base + "verify_tls = false\n")
    with pytest.raises(SettingsError, match=r"vcenter\.ca_file: given, but .*verify_tls"):
        load_config(path)


def test_credentials_file(tmp_path: Path) -> None:
    good = write(tmp_path, 'username = "svc"\npassword = "s3cret"\n', "creds.toml")
    creds = load_credentials(good)
    assert creds.username == "svc"
    assert creds.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(creds)
    missing = write(tmp_path, 'username = "svc"\n', "nopass.toml")
    with pytest.raises(SettingsError) as info:
        load_credentials(missing)
    assert str(missing) in str(info.value) and "password" in str(info.value)
    with pytest.raises(SettingsError, match=r"vCenter credentials file .*absent\.toml"):
        load_credentials(tmp_path / "absent.toml")


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TANDEM_VMWARE_BRIDGE_CONFIG", str(tmp_path / "bridge.toml"))
    monkeypatch.setenv("TANDEM_VMWARE_BRIDGE_REQUEST_MAX_AGE_S", "60")
    settings = VmwareBridgeSettings()
    assert settings.config == tmp_path / "bridge.toml"
    assert settings.request_max_age_s == 60
    monkeypatch.delenv("TANDEM_VMWARE_BRIDGE_CONFIG")
    assert VmwareBridgeSettings().config is None


# -- the choice rules (pure) ----------------------------------------------------------------


def host(name: str, cpu_used: float, mem_used: float, **kw: object) -> HostLoad:
    fields: dict[str, object] = {
        "moid": f"host-{name}",
        "name": name,
        "connected": True,
        "maintenance": False,
        "powered_on": True,
        "cpu_capacity_mhz": 4000.0,
        "cpu_used_mhz": cpu_used,
        "mem_capacity_mb": 1000.0,
        "mem_used_mb": mem_used,
    } | kw
    return HostLoad(**fields)  # type: ignore[arg-type]


def test_the_host_with_most_free_cpu_plus_memory_wins() -> None:
    loads = [
        host("a", 0, 0),  # current: never chosen
        host("b", 2000, 500),  # 0.5 + 0.5 = 1.0
        host("c", 400, 800),  # 0.9 + 0.2 = 1.1
        host("d", 0, 0, maintenance=True),
        host("e", 0, 0, connected=False),
        host("f", None, 0),  # no quick stats: CPU counts as fully used -> 0 + 1.0
    ]
    assert choose_host(loads, "host-a").name == "c"
    tie = [host("y", 2000, 500), host("x", 2000, 500)]
    assert choose_host(tie, None).name == "x"
    with pytest.raises(NoChoice, match=r"d \(in maintenance mode\); e \(not connected\)"):
        choose_host([host("a", 0, 0), loads[3], loads[4]], "host-a")


def ds(name: str, free_gib: int, **kw: object) -> DatastoreSpace:
    fields: dict[str, object] = {
        "moid": f"ds-{name}",
        "name": name,
        "accessible": True,
        "maintenance": False,
        "free_bytes": free_gib << 30,
        "capacity_bytes": 1 << 40,
    } | kw
    return DatastoreSpace(**fields)  # type: ignore[arg-type]


def test_the_datastore_with_most_free_space_wins() -> None:
    spaces = [
        ds("now", 900),
        ds("big-but-down", 800, accessible=False),
        ds("small", 5),
        ds("mid", 300),
        ds("busy", 700, maintenance=True),
    ]
    assert choose_datastore(spaces, ["ds-now"], needed_bytes=1 << 30).name == "mid"
    with pytest.raises(NoChoice, match=r"small \(5\.0 GiB free, the VM needs 400\.0\)"):
        choose_datastore([ds("now", 900), ds("small", 5)], ["ds-now"], needed_bytes=400 << 30)
