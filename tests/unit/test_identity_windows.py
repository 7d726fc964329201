"""WindowsLanIdentity: the PowerShell it runs to expose and hide a shared LAN address on a
Windows node (New-/Remove-NetIPAddress, Windows Firewall hide rules), and how it reads what
Windows answers.

There is no Windows host here: these tests record every argv given to the runner and assert
the exact commands issued, and feed it realistic output (the JSON the status script prints
with ConvertTo-Json, including Windows PowerShell 5.1's shapes, and PowerShell error records
on stderr with a non-zero exit code).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from recording_runner import RecordingRunner, Reply
from tandem.agent.control.base import ControlError
from tandem.agent.identity.windows import WindowsLanIdentity, parse_state, ps_quote

PS = ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
PRE = "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'; "
STATUS = [
    *PS,
    PRE + "$a = @(Get-NetIPAddress -IPAddress '10.0.0.50' -ErrorAction SilentlyContinue | "
    "ForEach-Object { [pscustomobject]@{ InterfaceAlias = $_.InterfaceAlias; "
    "PrefixLength = [int]$_.PrefixLength; AddressState = [string]$_.AddressState } }); "
    "$r = @(Get-NetFirewallRule -Name 'Tandem-Hide-demo-Outbound','Tandem-Hide-demo-Inbound' "
    "-ErrorAction SilentlyContinue | ForEach-Object { [pscustomobject]@{ Name = $_.Name; "
    "Enabled = [string]$_.Enabled; Direction = [string]$_.Direction; "
    "Action = [string]$_.Action; "
    "LocalAddress = @(($_ | Get-NetFirewallAddressFilter).LocalAddress) } }); "
    "[pscustomobject]@{ addresses = $a; rules = $r } | ConvertTo-Json -Compress -Depth 4",
]
ADD_ADDRESS = (
    "New-NetIPAddress -InterfaceAlias 'Ethernet 2' -IPAddress '10.0.0.50' -PrefixLength 24 "
    "-SkipAsSource $false -PolicyStore ActiveStore | Out-Null"
)
REMOVE_RULES = (
    "Get-NetFirewallRule -Name 'Tandem-Hide-demo-Outbound','Tandem-Hide-demo-Inbound' "
    "-ErrorAction SilentlyContinue | Remove-NetFirewallRule"
)
REMOVE_ADDRESS = "Remove-NetIPAddress -IPAddress '10.0.0.50' -Confirm:$false"
RULE_OUT = (
    "New-NetFirewallRule -Name 'Tandem-Hide-demo-Outbound' "
    "-DisplayName 'Tandem: hide the public address of demo (outbound)' -Group 'Tandem' "
    "-Direction Outbound -LocalAddress '10.0.0.50' -Action Block | Out-Null"
)
RULE_IN = (
    "New-NetFirewallRule -Name 'Tandem-Hide-demo-Inbound' "
    "-DisplayName 'Tandem: hide the public address of demo (inbound)' -Group 'Tandem' "
    "-Direction Inbound -LocalAddress '10.0.0.50' -Action Block | Out-Null"
)
EXPOSE = [*PS, PRE + ADD_ADDRESS + "; " + REMOVE_RULES]
FAILED_TAIL = (
    "if ($failed) { [Console]::Error.WriteLine($failed -join [Environment]::NewLine); exit 1 }"
)


def attempt(*steps: str) -> list[str]:
    """The argv of a hide: every step tried, the failures reported together at the end."""
    body = "; ".join(f"try {{ {s} }} catch {{ $failed += @([string]$_) }}" for s in steps)
    return [*PS, PRE + "$failed = @(); " + body + "; " + FAILED_TAIL]


def address(alias: str = "Ethernet 2", state: str = "Preferred") -> dict[str, Any]:
    return {"InterfaceAlias": alias, "PrefixLength": 24, "AddressState": state}


def rule(
    direction: str, enabled: str = "True", action: str = "Block", local: Any = ("10.0.0.50",)
) -> dict[str, Any]:
    return {
        "Name": f"Tandem-Hide-demo-{direction}",
        "Enabled": enabled,
        "Direction": direction,
        "Action": action,
        "LocalAddress": list(local) if isinstance(local, tuple) else local,
    }


def state(addresses: list[Any], rules: list[Any]) -> Reply:
    """What the status script prints (ConvertTo-Json -Compress), with exit code 0."""
    return 0, json.dumps({"addresses": addresses, "rules": rules}, separators=(",", ":")), ""


HIDDEN = state([], [rule("Outbound"), rule("Inbound")])
EXPOSED = state([address()], [])
BARE = state([], [])  # a node that never ran Tandem: no address, no rules

NO_ADAPTER = """\
New-NetIPAddress : No MSFT_NetAdapter objects found with property 'InterfaceAlias' equal to \
'Ethernet 2'.  Verify the value of the property and retry.
At line:1 char:76
+ ... ntinue'; New-NetIPAddress -InterfaceAlias 'Ethernet 2' -IPAddress '1 ...
+              ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    + CategoryInfo          : ObjectNotFound: (Ethernet 2:String) [New-NetIPAddress], \
CimJobException
    + FullyQualifiedErrorId : CmdletizationQuery_NotFound_InterfaceAlias,New-NetIPAddress
"""
ACCESS_DENIED = """\
Get-NetFirewallAddressFilter : Access is denied.
At line:1 char:410
+ ... dress = @(($_ | Get-NetFirewallAddressFilter).LocalAddress) } }); [ps ...
+                     ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
    + CategoryInfo          : PermissionDenied: (MSFT_NetAddressFilter:root/standardcimv2/\
MSFT_NetAddressFilter) [Get-NetFirewallAddressFilter], CimException
    + FullyQualifiedErrorId : Windows System Error 5,Get-NetFirewallAddressFilter
"""


def lan(runner: RecordingRunner, interface: str = "Ethernet 2") -> WindowsLanIdentity:
    return WindowsLanIdentity("demo", "10.0.0.50", interface, 24, runner=runner)


def k(argv: list[str]) -> tuple[str, ...]:
    return tuple(argv)


# --- quoting ------------------------------------------------------------------------------------


def read_single_quoted(text: str, start: int) -> tuple[str, int]:
    """PowerShell's reading of a single-quoted string at ``text[start]``: (value, end index).
    Any of the five single quotes opens or closes it; two in a row stand for one."""
    quotes = "'\u2018\u2019\u201a\u201b"
    assert text[start] in quotes
    i, out = start + 1, []
    while True:
        c = text[i]
        if c in quotes:
            if i + 1 < len(text) and text[i + 1] in quotes:
                out.append(c)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1


def test_ps_quote_keeps_every_value_verbatim() -> None:
    assert ps_quote("Ethernet 2") == "'Ethernet 2'"
    assert ps_quote("it's") == "'it''s'"
    assert ps_quote('$(Stop-Computer) `n "x"') == "'$(Stop-Computer) `n \"x\"'"
    for value in ["a'b", "\u2019; Stop-Computer; \u2018", "''", "x\u201a\u201by", ""]:
        assert read_single_quoted(ps_quote(value), 0) == (value, len(ps_quote(value)))


async def test_a_hostile_interface_alias_stays_one_string_argument() -> None:
    alias = "Eth' -IPAddress 1.2.3.4; Remove-Item C:\\ -Recurse; \u2019$(whoami)"
    seen: list[list[str]] = []

    async def runner(argv: list[str], timeout: float) -> Reply:
        seen.append(argv)
        return BARE if "Get-NetIPAddress" in argv[-1] else (0, "", "")

    ident = WindowsLanIdentity("demo", "10.0.0.50", alias, 24, runner=runner)
    await ident.expose()
    script = seen[1][-1]
    assert seen[1][:-1] == PS  # still one argv element for the whole script
    assert (
        "-InterfaceAlias 'Eth'' -IPAddress 1.2.3.4; Remove-Item C:\\ -Recurse; \u2019\u2019$("
        in (script)
    )
    at = script.index("-InterfaceAlias ") + len("-InterfaceAlias ")
    value, end = read_single_quoted(script, at)
    assert value == alias
    assert script[end:].startswith(" -IPAddress '10.0.0.50' -PrefixLength 24 ")


@pytest.mark.parametrize(
    ("address", "interface", "prefix", "cluster", "problem"),
    [
        ("10.0.0.300", "Ethernet", 24, "demo", "does not appear to be an IPv4 or IPv6"),
        ("10.0.0.5; calc", "Ethernet", 24, "demo", "does not appear to be an IPv4 or IPv6"),
        ("fe80::1%12", "Ethernet", 64, "demo", "must not carry a scope"),
        ("10.0.0.5", "Ethernet", 33, "demo", "not within 1-32"),
        ("10.0.0.5", "Ethernet", 0, "demo", "not within 1-32"),
        ("10.0.0.5", "", 24, "demo", "1-256 characters"),
        ("10.0.0.5", "Eth\nernet", 24, "demo", "control characters"),
        ("10.0.0.5", "Ethernet", 24, "Demo'", "cluster name"),
    ],
)
def test_bad_values_are_refused(
    address: str, interface: str, prefix: int, cluster: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        WindowsLanIdentity(cluster, address, interface, prefix, runner=RecordingRunner({}))


def test_without_a_prefix_length_the_address_is_a_host_address() -> None:
    v4 = WindowsLanIdentity("demo", "10.0.0.50", "Ethernet", runner=RecordingRunner({}))
    v6 = WindowsLanIdentity("demo", "2001:db8::50", "Ethernet", None, runner=RecordingRunner({}))
    assert (v4.prefix_len, v6.prefix_len) == (32, 128)
    assert "-PrefixLength 32 " in v4.add_address()


def test_ipv6_is_written_in_canonical_form() -> None:
    ident = WindowsLanIdentity(
        "demo", "2001:DB8:0::0:50", "Ethernet", 64, runner=RecordingRunner({})
    )
    assert ident.address == "2001:db8::50"
    assert "-IPAddress '2001:db8::50' -PrefixLength 64 " in ident.add_address()


# --- expose -------------------------------------------------------------------------------------


async def test_expose_adds_the_address_then_removes_the_hide_rules() -> None:
    runner = RecordingRunner({k(STATUS): [HIDDEN], k(EXPOSE): [(0, "", "")]})
    status = await lan(runner).expose()
    assert runner.calls == [STATUS, EXPOSE]
    assert (status.exposed, status.address, status.detail) == (True, "10.0.0.50", "exposed")


async def test_expose_on_a_bare_node_only_adds_the_address() -> None:
    add_only = [*PS, PRE + ADD_ADDRESS]
    runner = RecordingRunner({k(STATUS): [BARE], k(add_only): [(0, "", "")]})
    assert (await lan(runner).expose()).exposed
    assert runner.calls == [STATUS, add_only]


async def test_expose_of_an_exposed_address_does_nothing_and_says_so() -> None:
    runner = RecordingRunner({k(STATUS): [EXPOSED]})
    status = await lan(runner).expose()
    assert runner.calls == [STATUS]
    assert (status.exposed, status.detail) == (True, "already exposed")


async def test_expose_with_the_address_present_but_blocked_only_removes_the_rules() -> None:
    # Interface aliases compare without case, as on Windows.
    present_blocked = state([address("ETHERNET 2")], [rule("Inbound")])
    remove_only = [*PS, PRE + REMOVE_RULES.replace("'Tandem-Hide-demo-Outbound',", "")]
    runner = RecordingRunner({k(STATUS): [present_blocked], k(remove_only): [(0, "", "")]})
    status = await lan(runner).expose()
    assert runner.calls == [STATUS, remove_only]
    assert status.exposed and "hide rules removed" in status.detail


async def test_expose_refuses_an_address_held_by_another_interface() -> None:
    runner = RecordingRunner({k(STATUS): [state([address("Ethernet 5")], [])]})
    with pytest.raises(ControlError, match=r"10\.0\.0\.50 is on interface 'Ethernet 5', not on"):
        await lan(runner).expose()
    assert runner.calls == [STATUS]


async def test_expose_refuses_a_duplicate_address() -> None:
    runner = RecordingRunner({k(STATUS): [state([address(state="Duplicate")], [])]})
    with pytest.raises(ControlError, match="Duplicate: another host on the network"):
        await lan(runner).expose()
    assert runner.calls == [STATUS]


async def test_a_failed_expose_names_the_command_and_its_error() -> None:
    runner = RecordingRunner({k(STATUS): [HIDDEN], k(EXPOSE): [(1, "", NO_ADAPTER)]})
    with pytest.raises(ControlError) as info:
        await lan(runner).expose()
    message = info.value.message
    assert message.startswith(
        "expose 10.0.0.50: powershell.exe (New-NetIPAddress, Remove-NetFirewallRule) exited "
        "with code 1: New-NetIPAddress : No MSFT_NetAdapter objects found with property "
        "'InterfaceAlias' equal to 'Ethernet 2'."
    )
    assert "CmdletizationQuery_NotFound_InterfaceAlias" in message
    assert "At line:" not in message and "~~~" not in message


# --- hide ---------------------------------------------------------------------------------------


async def test_hide_removes_the_address_and_adds_both_block_rules() -> None:
    hide = attempt(REMOVE_ADDRESS, RULE_OUT, RULE_IN)
    runner = RecordingRunner({k(STATUS): [EXPOSED], k(hide): [(0, "", "")]})
    status = await lan(runner).hide()
    assert runner.calls == [STATUS, hide]
    assert (status.exposed, status.detail) == (False, "hidden")


async def test_hide_of_a_hidden_address_does_nothing_and_says_so() -> None:
    runner = RecordingRunner({k(STATUS): [HIDDEN]})
    status = await lan(runner).hide()
    assert runner.calls == [STATUS]
    assert (status.exposed, status.detail) == (False, "already hidden")


async def test_hide_removes_the_address_from_any_interface() -> None:
    hide = attempt(REMOVE_ADDRESS)
    elsewhere = state([address("Ethernet 5")], [rule("Outbound"), rule("Inbound")])
    runner = RecordingRunner({k(STATUS): [elsewhere], k(hide): [(0, "", "")]})
    await lan(runner).hide()
    assert runner.calls == [STATUS, hide]


async def test_hide_replaces_a_rule_that_no_longer_blocks() -> None:
    replace_in = (
        "Get-NetFirewallRule -Name 'Tandem-Hide-demo-Inbound' -ErrorAction SilentlyContinue | "
        "Remove-NetFirewallRule; " + RULE_IN
    )
    for altered in [
        rule("Inbound", enabled="False"),
        rule("Inbound", action="Allow"),
        rule("Inbound", local=("10.0.0.49",)),  # the address changed in the config since
        rule("Inbound", local="Any"),
    ]:
        hide = attempt(replace_in)
        runner = RecordingRunner(
            {k(STATUS): [state([], [rule("Outbound"), altered])], k(hide): [(0, "", "")]}
        )
        assert (await lan(runner).hide()).detail == "hidden"
        assert runner.calls == [STATUS, hide]


async def test_a_failed_hide_names_the_commands_and_their_errors() -> None:
    hide = attempt(REMOVE_ADDRESS, RULE_OUT, RULE_IN)
    errors = "Access is denied.\r\nAccess is denied.\r\nAccess is denied.\r\n"
    runner = RecordingRunner({k(STATUS): [EXPOSED], k(hide): [(1, "", errors)]})
    with pytest.raises(ControlError) as info:
        await lan(runner).hide()
    assert info.value.message == (
        "hide 10.0.0.50: powershell.exe (Remove-NetIPAddress, New-NetFirewallRule) exited "
        "with code 1: Access is denied. Access is denied. Access is denied."
    )


async def test_reset_on_start_hides() -> None:
    hide = attempt(REMOVE_ADDRESS, RULE_OUT, RULE_IN)
    runner = RecordingRunner({k(STATUS): [EXPOSED, HIDDEN], k(hide): [(0, "", "")]})
    ident = lan(runner)
    assert (await ident.reset_on_start()).detail == "hidden at start (was not hidden)"
    assert (await ident.reset_on_start()).detail == "hidden at start"
    assert runner.calls == [STATUS, hide, STATUS]


# --- status -------------------------------------------------------------------------------------


async def test_status_reports_what_windows_says() -> None:
    cases = [
        (EXPOSED, True, "10.0.0.50", "exposed on 'Ethernet 2' /24 (Preferred)"),
        (HIDDEN, False, None, "hidden: address absent, hide rules in place"),
        (BARE, False, None, "hide rule missing or altered: Outbound, Inbound"),
        (
            state([address()], [rule("Outbound")]),
            False,
            "10.0.0.50",
            "not exposed: on 'Ethernet 2' /24 (Preferred); blocked by Tandem-Hide-demo-Outbound",
        ),
        (state([address("Wi-Fi")], []), False, "10.0.0.50", "not on the configured interface"),
        (state([address(state="Duplicate")], []), False, "10.0.0.50", "Duplicate"),
    ]
    for reply, exposed, addr, detail in cases:
        status = await lan(RecordingRunner({k(STATUS): [reply]})).status()
        assert (status.exposed, status.address) == (exposed, addr), detail
        assert detail in status.detail


def test_status_json_in_every_shape_convertto_json_prints() -> None:
    one_rule = rule("Outbound", local="10.0.0.50")  # one LocalAddress: a bare string
    wrapped = {"value": [address()], "Count": 1}  # Windows PowerShell 5.1's wrapped array
    parsed = parse_state(json.dumps({"addresses": wrapped, "rules": one_rule}))
    assert [a.interface for a in parsed.addresses] == ["Ethernet 2"]
    assert parsed.rules[0].local_addresses == ("10.0.0.50",)
    assert parse_state("") == parse_state('{"addresses":null,"rules":null}')
    assert parse_state("").addresses == ()


async def test_a_status_query_that_fails_raises_with_its_error() -> None:
    runner = RecordingRunner({k(STATUS): [(1, "", ACCESS_DENIED)]})
    with pytest.raises(ControlError) as info:
        await lan(runner).status()
    assert info.value.message == (
        "powershell.exe Get-NetIPAddress/Get-NetFirewallRule for 10.0.0.50 exited with code 1: "
        "Get-NetFirewallAddressFilter : Access is denied. "
        "FullyQualifiedErrorId : Windows System Error 5,Get-NetFirewallAddressFilter"
    )
    # Nothing is changed when the state cannot be read.
    with pytest.raises(ControlError):
        await lan(runner).hide()
    assert runner.calls == [STATUS, STATUS]


async def test_output_that_is_not_the_status_json_raises() -> None:
    warning = "WARNING: The names of some imported commands include unapproved verbs.\r\n"
    runner = RecordingRunner({k(STATUS): [(0, warning, "")]})
    with pytest.raises(ControlError, match="not the expected JSON"):
        await lan(runner).status()


async def test_a_runner_that_cannot_run_powershell_raises_control_error() -> None:
    async def missing(argv: list[str], timeout: float) -> Reply:
        raise ControlError("cannot run powershell.exe: No such file or directory")

    ident = WindowsLanIdentity("demo", "10.0.0.50", "Ethernet 2", 24, runner=missing)
    with pytest.raises(ControlError, match=r"cannot run powershell\.exe"):
        await ident.expose()
