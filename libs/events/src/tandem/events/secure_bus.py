"""One deployment's bus secrets in one folder: the local CA and certificates, a password per
identity, and the nats-server config lines that use them (issue 17).

``SecureBusFiles.create(folder, clusters)`` writes (every file 0600)::

    folder/tls/{ca,server,client}.pem, *-key.pem   (tandem.events.bus_tls)
    folder/passwords.json                          user -> password (tandem.events.bus_auth)
    folder/identities.json                         the clusters and nodes they were made for
    folder/nats-auth.conf                          authorization + tls, for nats-server's include

Creating again keeps the passwords already there (``rotate`` names the ones to replace) and
writes new certificates only when ``new_certificates`` is set. ``tandem up``, ``tandem bus
secrets`` (for docker compose) and the test suite use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.events.bus_auth import (
    DEFAULT_ROUNDS,
    authorization_config,
    bus_settings_for,
    issue_passwords,
    read_bus_passwords,
    write_bus_passwords,
)
from tandem.events.bus_identities import BusIdentity, bus_identities
from tandem.events.bus_tls import (
    DEFAULT_SERVER_NAMES,
    TlsFiles,
    server_tls_config,
    tls_files_in,
    write_local_pki,
)
from tandem.events.private_files import write_private
from tandem.events.settings import BusSettings


@dataclass
class SecureBusFiles:
    folder: Path
    tls: TlsFiles
    clusters: dict[str, list[str]]
    identities: dict[str, BusIdentity]
    passwords: dict[str, str] = field(repr=False)

    @classmethod
    def create(
        cls,
        folder: Path,
        clusters: Mapping[str, Sequence[str]],
        *,
        server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
        rotate: Iterable[str] = (),
        new_certificates: bool = False,
        verify_clients: bool = False,
        rounds: int = DEFAULT_ROUNDS,
    ) -> SecureBusFiles:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        plain = {c: list(nodes) for c, nodes in clusters.items()}
        identities = {i.user: i for i in bus_identities(plain)}
        keep = read_bus_passwords(folder / "passwords.json")
        for user in rotate:
            if user not in identities:
                raise ValueError(
                    f"no bus identity {user!r} to rotate (known: {sorted(identities)})"
                )
            keep.pop(user, None)
        passwords = issue_passwords(list(identities.values()), keep)
        tls = tls_files_in(folder / "tls")
        if new_certificates or not tls.ca_cert.exists():
            tls = write_local_pki(folder / "tls", server_names)
        write_bus_passwords(folder / "passwords.json", passwords)
        write_private(folder / "identities.json", json.dumps({"clusters": plain}, indent=2) + "\n")
        config = authorization_config(
            list(identities.values()), passwords, rounds=rounds
        ) + server_tls_config(tls, verify_clients=verify_clients)
        write_private(folder / "nats-auth.conf", config)
        return cls(folder, tls, plain, identities, passwords)

    @classmethod
    def load(cls, folder: Path) -> SecureBusFiles:
        """The files ``create`` wrote (a missing one is a clear error naming it)."""
        try:
            clusters = json.loads((folder / "identities.json").read_text())["clusters"]
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{exc.filename}: no bus secrets here") from exc
        identities = {i.user: i for i in bus_identities(clusters)}
        return cls(
            folder,
            tls_files_in(folder / "tls"),
            clusters,
            identities,
            read_bus_passwords(folder / "passwords.json"),
        )

    def server_config(self) -> str:
        """What goes into nats-server's config (``NatsServer.extra_config``)."""
        return (self.folder / "nats-auth.conf").read_text()

    def login_env(self, user: str) -> dict[str, str]:
        """A service's environment that logs it in as ``user`` over TLS."""
        identity = self.identities[user]
        return {
            "TANDEM_BUS_USER": user,
            "TANDEM_BUS_PASSWORD": self.passwords[user],
            "TANDEM_BUS_INBOX_PREFIX": identity.inbox_prefix,
            "TANDEM_BUS_TLS_CA_FILE": str(self.tls.ca_cert),
        }

    def login_toml(self, user: str) -> str:
        """``login_env`` as lines of a node config's ``[bus]`` table."""
        return "".join(
            f"{key.removeprefix('TANDEM_BUS_').lower()} = {json.dumps(value)}\n"
            for key, value in self.login_env(user).items()
        )

    def settings(self, user: str, **bus: Any) -> BusSettings:
        """Settings that log in as ``user`` (``bus``: servers, timeouts...)."""
        bus.setdefault("tls_ca_file", self.tls.ca_cert)
        password = bus.pop("password", self.passwords[user])
        return bus_settings_for(self.identities[user], password, **bus)
