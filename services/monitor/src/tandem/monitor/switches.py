"""Rules turned on and off at runtime through ``tandem_config``.

Key ``rules.<cluster>.<node>.<rule>``, value ``enabled`` or ``disabled`` (a missing key means
the rule's configured default). Read by polling, so a bus reconnect needs no re-subscription.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js.errors import KeyNotFoundError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.subjects import CONFIG_BUCKET, rule_switch_key
from tandem.monitor.rules import RuleEngine
from tandem.monitor.rules_config import RuleConfig

log = logging.getLogger(__name__)


class RuleSwitches:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        rules: list[RuleConfig],
        engine: RuleEngine,
        poll_s: float,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.defaults = {r.name: r.enabled for r in rules}
        self.engine = engine
        self.poll_s = poll_s
        self.current = dict(self.defaults)

    async def run(self) -> None:
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            try:
                await self.poll()
            except Exception as exc:  # bus away: keep the rules as they are
                log.debug("rule switches not read: %s", exc)
            await asyncio.sleep(self.poll_s)

    async def poll(self) -> None:
        kv = await self.bus.kv(CONFIG_BUCKET)
        for rule, default in self.defaults.items():
            try:
                entry = await kv.get(rule_switch_key(self.cluster, self.node, rule))
                value = (entry.value or b"").decode().strip().lower()
            except KeyNotFoundError:
                value = ""
            wanted = {"enabled": True, "disabled": False}.get(value, default)
            if value and value not in ("enabled", "disabled"):
                log.warning("rule switch %s has %r; expected enabled or disabled", rule, value)
            if wanted != self.current[rule]:
                log.info("%s: rule %s %s at runtime", self.node, rule, "on" if wanted else "off")
                self.engine.set_enabled(rule, wanted)
                self.current[rule] = wanted
