"""A shared LAN address on a Windows node, plumbed and withdrawn with PowerShell (NetTCPIP and
NetSecurity cmdlets).

- expose: ``New-NetIPAddress`` on the configured interface (in the ``ActiveStore`` only: the
  public address lives in memory, a node that reboots comes up without it), then remove the
  hide rules.
- hide: ``Remove-NetIPAddress``, and two Windows Firewall rules ``Tandem-Hide-<cluster>-Outbound``
  and ``-Inbound`` that block traffic from and to the public address. They are the second line
  of defence for "a Passive never uses or answers for the public address": should the address
  come back (an operator, a failed removal), the node still neither sends from it nor accepts
  connections to it. They are persistent, so they hold across a reboot before the agent starts.

Every action is one ``powershell.exe -NoProfile -NonInteractive -Command <script>`` run through
the agent's ``Runner``, preceded by one status query (both the address and the rules, as JSON):
``expose`` and ``hide`` do only what is missing. Values are validated (``ipaddress``, the
prefix length) and every string is put in PowerShell single quotes with its quotes doubled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from dataclasses import dataclass
from typing import Any

from tandem.agent.control.base import ControlError
from tandem.agent.control.runner import Runner, run_command
from tandem.agent.identity.base import IdentityStatus
from tandem.events.names import check_name

log = logging.getLogger(__name__)

POWERSHELL = ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command"]
_PREAMBLE = "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue'"
# PowerShell ends a single-quoted string at any of these; doubling one makes it literal.
_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_DIRECTIONS = ("Outbound", "Inbound")


def ps_quote(value: str) -> str:
    """``value`` as a PowerShell single-quoted (verbatim) string literal."""
    return "'" + "".join(c * 2 if c in _SINGLE_QUOTES else c for c in value) + "'"


def powershell_argv(script: str) -> list[str]:
    return [*POWERSHELL, script]


@dataclass(frozen=True)
class AddressEntry:
    interface: str
    prefix_len: int | None
    state: str  # Preferred, Tentative, Duplicate, Deprecated, Invalid


@dataclass(frozen=True)
class RuleEntry:
    name: str
    enabled: bool
    direction: str
    action: str
    local_addresses: tuple[str, ...]


@dataclass(frozen=True)
class LanState:
    addresses: tuple[AddressEntry, ...]
    rules: tuple[RuleEntry, ...]


def parse_state(stdout: str) -> LanState:
    """The status script's JSON; raises ``ValueError`` when it is not what the script prints."""
    data = json.loads(stdout) if stdout.strip() else {}
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    addresses = tuple(
        AddressEntry(
            interface=str(a["InterfaceAlias"]),
            prefix_len=None if a.get("PrefixLength") is None else int(a["PrefixLength"]),
            state=str(a.get("AddressState") or ""),
        )
        for a in _items(data.get("addresses"))
    )
    rules = tuple(
        RuleEntry(
            name=str(r["Name"]),
            enabled=str(r.get("Enabled")).lower() == "true",
            direction=str(r.get("Direction")),
            action=str(r.get("Action")),
            local_addresses=tuple(str(x) for x in _items(r.get("LocalAddress"))),
        )
        for r in _items(data.get("rules"))
    )
    return LanState(addresses, rules)


def _items(value: Any) -> list[Any]:
    """A JSON list as ConvertTo-Json may print it: a list, one bare item, nothing, or Windows
    PowerShell 5.1's ``{"value": [...], "Count": n}`` for a wrapped array."""
    if value is None:
        return []
    if isinstance(value, dict) and set(value) == {"value", "Count"}:
        value = value["value"]
    return list(value) if isinstance(value, list) else [value]


class WindowsLanIdentity:
    def __init__(
        self,
        cluster: str,
        address: str,
        interface: str,
        prefix_len: int | None = None,
        *,
        runner: Runner = run_command,
        command_timeout_s: float = 60.0,
    ) -> None:
        ip = ipaddress.ip_address(address)
        if getattr(ip, "scope_id", None):
            raise ValueError(f"the public address {address!r} must not carry a scope (%zone)")
        if prefix_len is None:  # a host address beside the interface's own (as on Linux)
            prefix_len = ip.max_prefixlen
        if not 1 <= prefix_len <= ip.max_prefixlen:
            raise ValueError(f"prefix_len {prefix_len} is not within 1-{ip.max_prefixlen}")
        if not interface.strip() or len(interface) > 256:
            raise ValueError("the interface alias must be 1-256 characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in interface):
            raise ValueError(f"the interface alias {interface!r} contains control characters")
        self.cluster = check_name(cluster, "cluster name")
        self.address = str(ip)
        self.interface = interface
        self.prefix_len = prefix_len
        self.rule_names = {d: f"Tandem-Hide-{self.cluster}-{d}" for d in _DIRECTIONS}
        self._ip = ip
        self._run = runner
        self._timeout_s = command_timeout_s
        self._lock = asyncio.Lock()

    # -- the scripts ----------------------------------------------------------------------------

    def status_script(self) -> str:
        names = ",".join(ps_quote(n) for n in self.rule_names.values())
        return "; ".join(
            [
                _PREAMBLE,
                f"$a = @(Get-NetIPAddress -IPAddress {ps_quote(self.address)} "
                "-ErrorAction SilentlyContinue | ForEach-Object { [pscustomobject]@{ "
                "InterfaceAlias = $_.InterfaceAlias; PrefixLength = [int]$_.PrefixLength; "
                "AddressState = [string]$_.AddressState } })",
                f"$r = @(Get-NetFirewallRule -Name {names} -ErrorAction SilentlyContinue | "
                "ForEach-Object { [pscustomobject]@{ Name = $_.Name; "
                "Enabled = [string]$_.Enabled; Direction = [string]$_.Direction; "
                "Action = [string]$_.Action; "
                "LocalAddress = @(($_ | Get-NetFirewallAddressFilter).LocalAddress) } })",
                "[pscustomobject]@{ addresses = $a; rules = $r } | "
                "ConvertTo-Json -Compress -Depth 4",
            ]
        )

    def add_address(self) -> str:
        return (
            f"New-NetIPAddress -InterfaceAlias {ps_quote(self.interface)} "
            f"-IPAddress {ps_quote(self.address)} -PrefixLength {self.prefix_len} "
            "-SkipAsSource $false -PolicyStore ActiveStore | Out-Null"
        )

    def remove_address(self) -> str:
        return f"Remove-NetIPAddress -IPAddress {ps_quote(self.address)} -Confirm:$false"

    def remove_rules(self, names: list[str]) -> str:
        quoted = ",".join(ps_quote(n) for n in names)
        return (
            f"Get-NetFirewallRule -Name {quoted} -ErrorAction SilentlyContinue | "
            "Remove-NetFirewallRule"
        )

    def add_rule(self, direction: str) -> str:
        display = f"Tandem: hide the public address of {self.cluster} ({direction.lower()})"
        return (
            f"New-NetFirewallRule -Name {ps_quote(self.rule_names[direction])} "
            f"-DisplayName {ps_quote(display)} -Group 'Tandem' -Direction {direction} "
            f"-LocalAddress {ps_quote(self.address)} -Action Block | Out-Null"
        )

    # -- NetworkIdentity ------------------------------------------------------------------------

    async def status(self) -> IdentityStatus:
        """What Windows reports now; raises ``ControlError`` when it cannot be asked."""
        return self._describe(await self._query())

    async def expose(self) -> IdentityStatus:
        async with self._lock:
            state = await self._query()
            here = self._here(state)
            elsewhere = sorted({a.interface for a in state.addresses} - {a.interface for a in here})
            if elsewhere:
                raise ControlError(
                    f"{self.address} is on interface {', '.join(map(repr, elsewhere))}, not on "
                    f"{self.interface!r}: refusing to expose it twice (remove it there first)"
                )
            if any(a.state.lower() == "duplicate" for a in here):
                raise ControlError(
                    f"Windows marks {self.address} on {self.interface!r} Duplicate: another "
                    "host on the network still answers for it"
                )
            steps: list[str] = []
            if not here:
                steps.append(self.add_address())
            if state.rules:
                steps.append(self.remove_rules([r.name for r in state.rules]))
            if not steps:
                return IdentityStatus(exposed=True, address=self.address, detail="already exposed")
            await self._act("expose", steps, keep_going=False)
            log.info("exposed %s/%s on %r", self.address, self.prefix_len, self.interface)
            detail = "exposed" if not here else "exposed (address was present; hide rules removed)"
            return IdentityStatus(exposed=True, address=self.address, detail=detail)

    async def hide(self) -> IdentityStatus:
        async with self._lock:
            state = await self._query()
            steps: list[str] = []
            if state.addresses:
                steps.append(self.remove_address())
            for direction in _DIRECTIONS:
                rule = self._rule(state, direction)
                if rule is None:
                    steps.append(self.add_rule(direction))
                elif not self._rule_holds(rule, direction):
                    # Not what we would create (disabled, edited, an old address): replace it.
                    steps.append(f"{self.remove_rules([rule.name])}; {self.add_rule(direction)}")
            if not steps:
                return IdentityStatus(exposed=False, detail="already hidden")
            # Every step is tried even if one fails: the address gone without the rules, or
            # the rules in place when the address cannot be removed, is better than neither.
            await self._act("hide", steps, keep_going=True)
            log.info("hid %s (address removed, hide rules in place)", self.address)
            return IdentityStatus(exposed=False, detail="hidden")

    async def reset_on_start(self) -> IdentityStatus:
        """Hide whatever a previous run (or an operator) left exposed: a node starts hidden."""
        hidden = await self.hide()
        if hidden.detail == "hidden":
            log.warning("public address %s was not hidden at start; hidden now", self.address)
            return hidden.model_copy(update={"detail": "hidden at start (was not hidden)"})
        return hidden.model_copy(update={"detail": "hidden at start"})

    # -- helpers --------------------------------------------------------------------------------

    def _here(self, state: LanState) -> list[AddressEntry]:
        wanted = self.interface.casefold()  # Windows compares aliases without case
        return [a for a in state.addresses if a.interface.casefold() == wanted]

    def _rule_holds(self, rule: RuleEntry, direction: str) -> bool:
        return (
            rule.enabled
            and rule.action.lower() == "block"
            and rule.direction.lower() == direction.lower()
            and any(_same_address(x, self._ip) for x in rule.local_addresses)
        )

    def _rule(self, state: LanState, direction: str) -> RuleEntry | None:
        return next((r for r in state.rules if r.name == self.rule_names[direction]), None)

    def _describe(self, state: LanState) -> IdentityStatus:
        here = self._here(state)
        duplicate = any(a.state.lower() == "duplicate" for a in here)
        where = "; ".join(
            f"on {a.interface!r} /{a.prefix_len} ({a.state})" for a in state.addresses
        )
        if here and not state.rules and not duplicate:
            return IdentityStatus(exposed=True, address=self.address, detail=f"exposed {where}")
        if state.addresses:
            if state.rules:
                why = "blocked by " + ", ".join(r.name for r in state.rules)
            elif not here:
                why = f"not on the configured interface {self.interface!r}"
            else:
                why = "Windows marks it Duplicate (another host answers for it)"
            return IdentityStatus(
                exposed=False, address=self.address, detail=f"not exposed: {where}; {why}"
            )
        missing = [
            d
            for d in _DIRECTIONS
            if (rule := self._rule(state, d)) is None or not self._rule_holds(rule, d)
        ]
        if missing:
            altered = ", ".join(missing)
            return IdentityStatus(
                exposed=False,
                detail=f"hidden: address absent; hide rule missing or altered: {altered}",
            )
        return IdentityStatus(exposed=False, detail="hidden: address absent, hide rules in place")

    async def _query(self) -> LanState:
        argv = powershell_argv(self.status_script())
        rc, out, err = await self._run(argv, self._timeout_s)
        if rc != 0:
            raise ControlError(
                f"powershell.exe Get-NetIPAddress/Get-NetFirewallRule for {self.address} "
                f"exited with code {rc}: {_gist(err or out)}"
            )
        try:
            return parse_state(out)
        except (ValueError, KeyError, TypeError) as exc:
            raise ControlError(
                f"powershell.exe Get-NetIPAddress/Get-NetFirewallRule for {self.address} "
                f"printed what is not the expected JSON ({exc}): {_gist(out)}"
            ) from None

    async def _act(self, action: str, steps: list[str], *, keep_going: bool) -> None:
        if keep_going:
            body = [f"try {{ {s} }} catch {{ $failed += @([string]$_) }}" for s in steps]
            tail = (
                "if ($failed) { [Console]::Error.WriteLine($failed -join [Environment]::NewLine); "
                "exit 1 }"
            )
            script = "; ".join([_PREAMBLE, "$failed = @()", *body, tail])
        else:
            script = "; ".join([_PREAMBLE, *steps])
        rc, out, err = await self._run(powershell_argv(script), self._timeout_s)
        if rc != 0:
            cmdlets = ", ".join(dict.fromkeys(_cmdlets(steps)))
            raise ControlError(
                f"{action} {self.address}: powershell.exe ({cmdlets}) exited with code {rc}: "
                f"{_gist(err or out)}"
            )


_CMDLETS = (
    "New-NetIPAddress",
    "Remove-NetIPAddress",
    "New-NetFirewallRule",
    "Remove-NetFirewallRule",
)


def _cmdlets(steps: list[str]) -> list[str]:
    return [c for s in steps for c in _CMDLETS if c in s]


def _same_address(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False


def _gist(text: str) -> str:
    """The message of a PowerShell error on one line, without its position markers."""
    keep = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("At line:"):
            continue
        if line.startswith("+ ") and "FullyQualifiedErrorId" not in line:
            continue
        keep.append(line.removeprefix("+ "))
    words = " ".join(keep)
    return (words[:600] + "...") if len(words) > 600 else (words or "(no output)")
