"""The bus logins of a Tandem compose file (issue 17): the part of ``compose_check`` about them.

The file takes its secrets from the folder ``tandem bus secrets`` writes, named
``${TANDEM_SECRETS_DIR:-./bus-secrets}``. Checked here:

* a folder that does not exist yet (a fresh checkout) is stood in for by a throwaway one,
  written as ``tandem bus secrets`` would for this file (its agents' clusters and nodes, its
  nats hosts as server names): ``docker-compose config`` needs the env files;
* every Tandem service logs in: an ``env_file`` naming one of the folder's identities, its
  own (``agent:<cluster>:<node>`` of an agent's node config, ``orchestrator``...), unless
  its environment names a ``TANDEM_BUS_USER`` itself;
* the CA file its login names is bind-mounted into the service;
* the server certificate is valid for every nats host the services are told to use;
* a file a mounted nats config ``include``s is mounted too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import compose_check as cc
from tandem.cli.bus_secrets import certificate_names, write_bus_secrets
from tandem.cli.busurl import SECRETS_ENV, service_identity
from tandem.events.secure_bus import SecureBusFiles

log = logging.getLogger("compose_check")

DEFAULT_SECRETS = "./bus-secrets"
_VARIABLE = re.compile(r"\$\{(\w+)(:?-)?([^}]*)\}")
_INCLUDE = re.compile(r"""^\s*include\s+["']?([^"'\s]+)""", re.MULTILINE)


def expand(value: str, env: dict[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` as docker-compose reads them."""

    def one(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3)
        have = env.get(name)
        if op == ":-" and not have:
            return default
        if op == "-" and have is None:
            return default
        return have or ""

    return _VARIABLE.sub(one, value)


def secrets_folder(base: Path, env: dict[str, str]) -> Path:
    return cc.resolve(base, env.get(SECRETS_ENV) or DEFAULT_SECRETS)


def _agent_names(service: dict[str, Any], base: Path) -> tuple[str, str] | None:
    """(cluster, node) of an agent service, from its mounted node config (None: unknown)."""
    env = cc.as_mapping(service.get("environment"))
    config = env.get(cc.AGENT_CONFIG)
    mount = cc.config_mount(service, str(config)) if config else None
    if mount is None or "$" in mount[0]:
        return None
    try:
        with (cc.resolve(base, mount[0]) / mount[1]).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    cluster = env.get("TANDEM_NODE_CLUSTER") or data.get("cluster")
    node = env.get("TANDEM_NODE_NODE") or data.get("node")
    return (str(cluster), str(node)) if cluster and node else None


def _bus_hosts(services: dict[str, Any]) -> list[str]:
    """The hosts of every service's TANDEM_BUS_SERVERS that are services of the file."""
    hosts: dict[str, None] = {}
    for service in services.values():
        env = cc.as_mapping(service.get("environment") if isinstance(service, dict) else None)
        for url in str(env.get("TANDEM_BUS_SERVERS") or "").split(","):
            host = urlsplit(url.strip()).hostname
            if host and host in services:
                hosts[host] = None
    return list(hosts)


@contextlib.contextmanager
def bus_secrets(
    services: dict[str, Any], base: Path
) -> Iterator[tuple[SecureBusFiles | None, dict[str, str]]]:
    """The secrets folder to check against and the environment for ``docker-compose config``
    (a throwaway folder's path when the real one is not there yet)."""
    folder = secrets_folder(base, dict(os.environ))
    if (folder / "identities.json").exists():
        yield SecureBusFiles.load(folder), {}
        return
    clusters: dict[str, list[str]] = {}
    for service in services.values():
        names = _agent_names(service, base) if isinstance(service, dict) else None
        with contextlib.suppress(ValueError):  # an invalid name: the node config check says so
            if names is not None and service_identity("agent", *names):
                nodes = clusters.setdefault(names[0], [])
                nodes += [] if names[1] in nodes else [names[1]]
    with tempfile.TemporaryDirectory(prefix="compose-check-secrets-") as tmp:
        log.info("%s does not exist: checking against throwaway bus secrets", folder)
        try:
            files = write_bus_secrets(
                Path(tmp), clusters, server_names=_bus_hosts(services), rounds=4
            )
        except ValueError as exc:  # a name the identities refuse: reported elsewhere
            log.info("no throwaway bus secrets: %s", exc)
            yield None, {}
            return
        yield files, {SECRETS_ENV: tmp}


def _env_files(service: dict[str, Any]) -> list[str]:
    value = service.get("env_file")
    items = value if isinstance(value, list) else [value] if value else []
    return [str(i.get("path") if isinstance(i, dict) else i) for i in items]


def _read_env_file(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in lines if line.strip() and not line.startswith("#"))
    return {k.strip(): v for k, sep, v in pairs if sep}


def login_problems(
    name: str, service: dict[str, Any], base: Path, files: SecureBusFiles, env: dict[str, str]
) -> list[str]:
    """A Tandem service's login: its env_file in the folder, its own identity, its CA."""
    modules = [module for _, module in cc.tandem_modules(service)]
    own_env = cc.as_mapping(service.get("environment"))
    if not modules or own_env.get("TANDEM_BUS_USER"):
        return []
    logins = files.folder / "env"
    found = [
        cc.resolve(base, expand(f, {**os.environ, **env}))
        for f in _env_files(service)
        if cc.resolve(base, expand(f, {**os.environ, **env})).parent == logins
    ]
    if not found:
        return [
            f"service {name}: no bus login: give it env_file "
            "${TANDEM_SECRETS_DIR:-./bus-secrets}/env/<identity>.env (tandem bus secrets)"
        ]
    if not found[0].is_file():
        return []  # docker-compose config names the missing env file
    login = _read_env_file(found[0])
    user = login.get("TANDEM_BUS_USER", "")
    shown = f"env/{found[0].name}"
    if user not in files.identities:
        return [f"service {name}: {shown} logs in as {user!r}, not an identity of the folder"]
    problems = []
    ca = login.get("TANDEM_BUS_TLS_CA_FILE")
    if ca and not _mounted(service, ca, base, env):
        problems.append(
            f"service {name}: the bus CA {ca} ({shown}) is not bind-mounted "
            "(mount ${TANDEM_SECRETS_DIR:-./bus-secrets}/ca.pem there)"
        )
    wanted = _own_identity(modules[0], service, base)
    if wanted is not None and user != wanted:
        problems.append(f"service {name}: {shown} logs in as {user!r}, not as {wanted!r}")
    return problems


def _own_identity(module: str, service: dict[str, Any], base: Path) -> str | None:
    """The identity the service should log in as; None when unknown (an agent whose node
    config is missing or invalid: the node config check names why)."""
    names = _agent_names(service, base) if module == "agent" else None
    try:
        return service_identity(module, *(names or (None, None)))
    except ValueError:
        return None


def _mounted(service: dict[str, Any], path: str, base: Path, env: dict[str, str]) -> bool:
    mount = cc.config_mount(service, path)
    if mount is None:
        return False
    return (cc.resolve(base, expand(mount[0], {**os.environ, **env})) / mount[1]).exists()


def certificate_problems(services: dict[str, Any], files: SecureBusFiles) -> list[str]:
    names = set(certificate_names(files.tls.server_cert))
    return [
        f"the bus certificate {files.tls.server_cert} is not valid for {host!r}, which "
        "services connect to (tandem bus secrets --new-certificates --server-name "
        f"{host} ...)"
        for host in _bus_hosts(services)
        if host not in names
    ]


def include_problems(
    name: str, service: dict[str, Any], base: Path, env: dict[str, str]
) -> list[str]:
    """Files that a bind-mounted nats config (``*.conf``) includes must be mounted too."""
    problems = []
    for source, target in cc.bind_mounts(service):
        host = cc.resolve(base, expand(source, {**os.environ, **env}))
        if not target.endswith(".conf") or not host.is_file():
            continue
        for included in _INCLUDE.findall(host.read_text(encoding="utf-8", errors="replace")):
            inside = str(PurePosixPath(target).parent / included)
            if not _mounted(service, inside, base, env):
                problems.append(
                    f"service {name}: {cc.display_path(host, base)} includes {included}, "
                    f"but {inside} is not bind-mounted"
                )
    return problems


def check_logins(
    services: dict[str, Any], base: Path, files: SecureBusFiles | None, env: dict[str, str]
) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        if isinstance(service, dict):
            problems += include_problems(str(name), service, base, env)
            if files is not None:
                problems += login_problems(str(name), service, base, files, env)
    return problems + (certificate_problems(services, files) if files is not None else [])
