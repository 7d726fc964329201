"""Static checks of a Tandem docker-compose file, with no Docker engine needed.

    python tests/compose_check.py docker-compose.yml

``check(path)`` returns the problems found (empty when the file is fine):

* ``docker-compose -f FILE config -q`` (Debian's Python docker-compose) must accept the file;
* every local build context and its Dockerfile, and every bind-mounted host path, must exist;
* a build arg ``SERVICE`` or a ``-m tandem.<name>`` command or entrypoint must name a service
  that exists as ``services/<name>/src/tandem/<name>/__main__.py`` under the build context;
* ``TANDEM_BUS_SERVERS`` must list nats URLs whose hosts are services of the same file;
* ``TANDEM_AGENT_*`` must be what the node agent's own settings accept: an agent service sets
  ``TANDEM_AGENT_CONFIG`` to a path bind-mounted from a host file, that file must pass
  ``load_node_config`` with the service's ``TANDEM_NODE_*`` and ``TANDEM_BUS_*`` entries applied
  as the agent would see them, and its ``[bus]`` servers must be nats URLs to services of the file;
* every Tandem service must log in to the bus as its own identity, with the deployment's CA
  mounted, and the nats servers must have the files their config includes (``compose_bus_check``).

"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from tandem.agent.config import load_node_config
from tandem.agent.settings import AgentSettings
from tandem.events.settings import SettingsError

log = logging.getLogger("compose_check")

COMPOSE = "docker-compose"
COMPOSE_HINT = "install the Debian package with `apt-get install docker-compose`"
COMPOSE_TIMEOUT_S = 60.0
BUS_SCHEMES = ("nats", "tls", "ws", "wss")
AGENT_PREFIX = "TANDEM_AGENT_"
AGENT_CONFIG = f"{AGENT_PREFIX}CONFIG"
TANDEM_PREFIX = "TANDEM_"
# What the agent reads besides its config path: node config overrides, and the bus settings a
# [bus] table leaves out.
NODE_PREFIX = "TANDEM_NODE_"
BUS_PREFIX = "TANDEM_BUS_"
NODE_BUS_PREFIX = f"{NODE_PREFIX}BUS__"
# One problem of SettingsError's "invalid configuration in FILE:" list: "  field (env VAR): msg".
SETTINGS_LINE_RE = re.compile(r"^(?P<field>\S+)(?: \(env (?P<env>[^)]+)\))?: (?P<msg>.*)$")
# pydantic-settings' error for a variable it cannot decode.
ENV_PARSE_RE = re.compile(r'error parsing value for field "([^"]+)"')
MODULE_RE = re.compile(r"-m\s+tandem\.([A-Za-z_][A-Za-z0-9_]*)")


class CheckError(Exception):
    """The file cannot be checked further (unreadable or not a compose mapping)."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    services: int = 0


class _AgentFromFile(AgentSettings):
    """The agent's settings, fed only the values given: the checker's own environment must
    neither fill in nor hide what the compose file lacks."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# --- running docker-compose and reading YAML -------------------------------------------------


def compose_binary() -> str | None:
    return shutil.which(COMPOSE)


def compose_config_problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    """``docker-compose config``'s verdict; ``env``: variables added to its environment."""
    binary = compose_binary()
    if binary is None:
        return [f"{COMPOSE} is not installed: {COMPOSE_HINT}"]
    try:
        result = subprocess.run(
            [binary, "-f", str(path), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=COMPOSE_TIMEOUT_S,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"{COMPOSE} config could not check {path}: {exc}"]
    if result.returncode == 0:
        return []
    detail = result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}"
    return [f"{COMPOSE} config rejects {path}: {detail}"]


def load_yaml(path: Path) -> Any:
    """Parse ``path``; raise ``CheckError`` when it cannot be read or parsed."""
    try:
        with path.open(encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise CheckError(f"cannot read {path}: {exc}") from None


# --- reading compose structures (short and long syntax) ---------------------------------------


def as_mapping(value: Any) -> dict[str, Any]:
    """``environment`` and ``build.args`` come as a mapping or a list of ``KEY=VALUE``."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        pairs = (str(item).partition("=") for item in value)
        return {key: (val if sep else None) for key, sep, val in pairs}
    return {}


def build_of(service: dict[str, Any]) -> dict[str, Any] | None:
    build = service.get("build")
    if isinstance(build, str):
        return {"context": build}
    return build if isinstance(build, dict) else None


def is_remote(context: str) -> bool:
    return "://" in context or context.startswith("git@")


def resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def context_dir(service: dict[str, Any], base: Path) -> Path | None:
    """The local build context of ``service``, or ``None`` for an image or a remote context."""
    build = build_of(service)
    if build is None:
        return None
    context = str(build.get("context", "."))
    return None if is_remote(context) else resolve(base, context)


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of bind mounts (short syntax ``./src:/dst[:ro]`` or
    ``type: bind``)."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = split_volume(volume)
            # A path, or a path docker-compose substitutes (${DIR:-./x}/file): not a volume name.
            if len(parts) > 1 and parts[0].startswith((".", "/", "~", "$")):
                yield parts[0], parts[1]
        elif isinstance(volume, dict) and volume.get("type") == "bind" and volume.get("source"):
            yield str(volume["source"]), str(volume.get("target") or "")


def split_volume(volume: str) -> list[str]:
    """``source:target[:mode]`` split at the colons outside ``${...}`` (``${DIR:-./x}``)."""
    parts, current, depth = [], "", 0
    for i, char in enumerate(volume):
        if volume.startswith("${", i):
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        if char == ":" and not depth:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def bind_sources(service: dict[str, Any]) -> Iterator[str]:
    """Host paths of bind mounts."""
    for source, _ in bind_mounts(service):
        yield source


def tandem_modules(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, name) for each Tandem service the container is told to run."""
    args = as_mapping((build_of(service) or {}).get("args"))
    if args.get("SERVICE") is not None:
        yield "build arg SERVICE", str(args["SERVICE"])
    for key in ("entrypoint", "command"):
        value = service.get(key)
        text = " ".join(map(str, value)) if isinstance(value, list) else str(value or "")
        for match in MODULE_RE.finditer(text):
            yield key, match.group(1)


def host_names(services: dict[str, Any]) -> set[str]:
    """Names other containers can reach a service by: its name, hostname, aliases."""
    names = set(services)
    for service in services.values():
        names.update(str(service[k]) for k in ("hostname", "container_name") if service.get(k))
        networks = service.get("networks")
        if isinstance(networks, dict):
            for net in networks.values():
                names.update(map(str, (net or {}).get("aliases") or []))
    return names


# --- the checks -----------------------------------------------------------------------------


def interpolated(service: str, what: str, value: Any) -> bool:
    """True (and not checked) when docker-compose takes ``value`` from its own environment:
    ``${VAR}`` substitution, or an ``environment`` entry given without a value."""
    if value is not None and "$" not in str(value):
        return False
    log.debug("service %s: %s comes from docker-compose's environment; not checked", service, what)
    return True


def check_build(name: str, service: dict[str, Any], base: Path) -> list[str]:
    context = context_dir(service, base)
    if context is None:
        return []
    if not context.is_dir():
        return [f"service {name}: build context {context} does not exist"]
    dockerfile = resolve(context, str((build_of(service) or {}).get("dockerfile") or "Dockerfile"))
    if not dockerfile.is_file():
        return [f"service {name}: dockerfile {dockerfile} does not exist"]
    return []


def check_binds(name: str, service: dict[str, Any], base: Path) -> list[str]:
    return [
        f"service {name}: bind-mounted host path {source} does not exist"
        for source in bind_sources(service)
        if not interpolated(name, source, source) and not resolve(base, source).exists()
    ]


def check_modules(name: str, service: dict[str, Any], base: Path) -> list[str]:
    root = context_dir(service, base) or base
    problems = []
    for where, module in tandem_modules(service):
        main = root / "services" / module / "src" / "tandem" / module / "__main__.py"
        if not interpolated(name, where, module) and not main.is_file():
            problems.append(
                f"service {name}: {where} names Tandem service {module!r}, but {main} "
                "does not exist"
            )
    return problems


def check_bus(name: str, env: dict[str, Any], hosts: set[str]) -> list[str]:
    value = env.get("TANDEM_BUS_SERVERS", "")
    if "TANDEM_BUS_SERVERS" not in env or interpolated(name, "TANDEM_BUS_SERVERS", value):
        return []
    urls = [u.strip() for u in str(value).split(",") if u.strip()]
    if not urls:
        return [f"service {name}: TANDEM_BUS_SERVERS is empty"]
    problems = (url_problem(url, hosts) for url in urls)
    return [f"service {name}: TANDEM_BUS_SERVERS: {p}" for p in problems if p]


def url_problem(url: str, hosts: set[str]) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in BUS_SCHEMES:
        return f"{url!r} is not a {', '.join(s + '://' for s in BUS_SCHEMES)} URL"
    try:
        _ = parts.port  # raises ValueError on a port that is not a number in 0-65535
    except ValueError:
        return f"{url!r} has an invalid port"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.hostname not in hosts:
        return f"{url!r} points at {parts.hostname!r}, which is not a service of this file"
    return None


def check_agent(
    name: str,
    service: dict[str, Any],
    env: dict[str, Any],
    base: Path | None = None,
    hosts: set[str] | None = None,
) -> list[str]:
    """The agent's settings, then the node config file ``TANDEM_AGENT_CONFIG`` names (read from
    the host file bind-mounted there; ``base`` is the compose file's directory)."""
    # Strings, as the agent reads them from its environment.
    values: dict[str, Any] = {
        k.removeprefix(AGENT_PREFIX).lower(): v if v is None else str(v)
        for k, v in env.items()
        if k.startswith(AGENT_PREFIX)
    }
    runs_agent = any(module == "agent" for _, module in tandem_modules(service))
    if not (values or runs_agent) or any(interpolated(name, k, v) for k, v in values.items()):
        return []
    try:
        settings = _AgentFromFile(**values)
    except ValidationError as exc:
        return [
            f"service {name}: {AGENT_PREFIX}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
    if not values.get("config"):
        return [f"service {name}: {AGENT_CONFIG} is empty"]
    config = str(settings.config)
    return check_node_config(name, service, env, config, base or Path.cwd(), hosts)


def config_mount(service: dict[str, Any], container_path: str) -> tuple[str, str] | None:
    """(bind-mount source, path below it) behind ``container_path``: the bind mount of that
    file, or of the deepest directory holding it; ``None`` when no bind mount covers it."""
    workdir = PurePosixPath(str(service.get("working_dir") or "/"))
    wanted = workdir / container_path  # an absolute container_path replaces workdir
    found: tuple[PurePosixPath, str] | None = None
    for source, target in bind_mounts(service):
        if not target:
            continue
        mount = PurePosixPath(target)
        if (wanted == mount or mount in wanted.parents) and (
            found is None or len(mount.parts) > len(found[0].parts)
        ):
            found = (mount, source)
    return None if found is None else (found[1], str(wanted.relative_to(found[0])))


def display_path(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


@contextmanager
def agent_environment(entries: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``entries`` as its only ``TANDEM_*`` variables (what the container
    sees, not what the checker runs with); restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.upper().startswith(TANDEM_PREFIX)}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(entries)
        yield
    finally:
        for key in [k for k in os.environ if k.upper().startswith(TANDEM_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def file_bus_fields(path: Path) -> set[str]:
    """The fields the file's own ``[bus]`` table sets (``TANDEM_BUS_*`` fill in the others)."""
    try:
        with path.open("rb") as f:
            bus = tomllib.load(f).get("bus")
    except (OSError, tomllib.TOMLDecodeError):
        return set()
    return {str(k).lower() for k in bus} if isinstance(bus, dict) else set()


def setting_source(variable: str | None, keys: set[str], file_bus: set[str]) -> str | None:
    """Which of the service's ``keys`` gives the field whose variable is ``variable`` (as
    ``describe_validation_error`` names it, e.g. ``TANDEM_NODE_BUS__SERVERS``), if any:
    ``TANDEM_NODE_*`` override the file; ``TANDEM_BUS_*`` fill in what its [bus] leaves out."""
    if variable is None:
        return None
    variable = variable.upper()
    for key in sorted(keys):
        upper = key.upper()
        if upper.startswith(NODE_PREFIX) and (
            variable == upper or variable.startswith(upper + "__")
        ):
            return key
    for key in sorted(keys):
        field = key.upper().removeprefix(BUS_PREFIX)
        if key.upper().startswith(BUS_PREFIX) and field.lower() not in file_bus:
            if variable == NODE_BUS_PREFIX + field:
                return key
    return None


def check_node_config(
    name: str,
    service: dict[str, Any],
    env: dict[str, Any],
    container_path: str,
    base: Path,
    hosts: set[str] | None,
) -> list[str]:
    """The node config file the agent of service ``name`` reads, as the agent would read it."""
    mount = config_mount(service, container_path)
    if mount is None:
        return [
            f"service {name}: {AGENT_CONFIG}: {container_path} is not bind-mounted from a host "
            "file (add e.g. ./node.toml:/etc/tandem/node.toml:ro to its volumes)"
        ]
    source, below = mount
    if interpolated(name, f"the host file of {container_path}", source):
        return []
    if not resolve(base, source).exists():
        return []  # check_binds names the missing bind-mount source
    host_file = resolve(base, source) / below
    shown = display_path(host_file, base)
    entries = {k: v for k, v in env.items() if k.upper().startswith((NODE_PREFIX, BUS_PREFIX))}
    # Values docker-compose fills in are unknown: leave them out, and the fields they set alone.
    unknown = {k for k, v in entries.items() if interpolated(name, k, v)}
    applied = {k: str(v) for k, v in entries.items() if k not in unknown}
    file_bus = file_bus_fields(host_file)
    try:
        with agent_environment(applied):
            config = load_node_config(host_file)
    except SettingsError as exc:
        return node_config_problems(
            name, shown, host_file, str(exc), set(entries), unknown, file_bus
        )
    except ValueError as exc:  # pydantic-settings cannot parse a TANDEM_NODE_* value
        found = ENV_PARSE_RE.search(str(exc))
        key = (
            setting_source(NODE_PREFIX + found[1].upper(), set(applied), file_bus)
            if found
            else None
        )
        if found is None or key is None:
            return [f"service {name}: {shown}: {exc}"]
        return [
            f"service {name}: {shown}: {found[1]} (from {key}): cannot be parsed "
            "(lists and tables are JSON)"
        ]
    source_key = setting_source(f"{NODE_BUS_PREFIX}SERVERS", set(entries), file_bus)
    if hosts is None or source_key in unknown:
        return []
    where = "bus.servers" + (f" (from {source_key})" if source_key else "")
    problems = (url_problem(url, hosts) for url in config.bus.servers)
    return [f"service {name}: {shown}: {where}: {p}" for p in problems if p]


def node_config_problems(
    name: str,
    shown: str,
    host_file: Path,
    message: str,
    keys: set[str],
    unknown: set[str],
    file_bus: set[str],
) -> list[str]:
    """One line per problem in ``load_node_config``'s ``SettingsError`` message."""
    lines = message.splitlines()
    if not lines or not lines[0].startswith("invalid configuration in "):
        # The file as a whole (missing, unreadable, not TOML): "FILE: problem".
        text = " ".join(line.strip() for line in lines).removeprefix(f"{host_file}: ")
        return [f"service {name}: {shown}: {text}"]
    problems: list[str] = []
    skipping = False
    for line in lines[1:]:
        if not line.startswith("  ") and (problems or skipping):  # a message spanning lines
            if not skipping:
                problems[-1] += " " + line.strip()
            continue
        match = SETTINGS_LINE_RE.match(line.strip())
        key = setting_source(match["env"], keys, file_bus) if match else None
        skipping = key in unknown
        if skipping:
            continue
        if match is None:
            problems.append(f"service {name}: {shown}: {line.strip()}")
        else:
            where = match["field"] + (f" (from {key})" if key else "")
            problems.append(f"service {name}: {shown}: {where}: {match['msg']}")
    return problems


def check_service(name: str, service: Any, base: Path, hosts: set[str]) -> list[str]:
    if not isinstance(service, dict):
        return [f"service {name}: not a mapping"]
    env = as_mapping(service.get("environment"))
    return [
        *check_build(name, service, base),
        *check_binds(name, service, base),
        *check_modules(name, service, base),
        *check_bus(name, env, hosts),
        *check_agent(name, service, env, base, hosts),
    ]


def services_of(model: Any, path: Path) -> dict[str, Any]:
    services = model.get("services") if isinstance(model, dict) else None
    if not isinstance(services, dict) or not services:
        raise CheckError(f"{path} defines no services")
    return services


def run(path: str | Path) -> Report:
    path = Path(path)
    if not path.is_file():
        return Report([f"{path} does not exist"])
    try:
        services = services_of(load_yaml(path), path)
    except CheckError as exc:
        return Report([*compose_config_problems(path), str(exc)])
    import compose_bus_check  # it builds on this module's helpers

    base = path.resolve().parent
    with compose_bus_check.bus_secrets(services, base) as (secrets, env):
        report = Report(compose_config_problems(path, env))
        hosts = host_names(services)
        report.services = len(services)
        for name, service in services.items():
            report.problems.extend(check_service(str(name), service, base, hosts))
        report.problems.extend(compose_bus_check.check_logins(services, base, secrets, env))
    return report


def check(path: str | Path) -> list[str]:
    """The problems of the compose file at ``path``; empty when it is fine."""
    return run(path).problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a Tandem docker-compose file.")
    parser.add_argument("file", type=Path, help="the compose file, e.g. docker-compose.yml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    report = run(args.file)
    if report.problems:
        for problem in report.problems:
            print(problem, file=sys.stderr)
        return 1
    print(f"compose file OK: {report.services} services")
    return 0


if __name__ == "__main__":
    # compose_bus_check imports this module by name: one copy of it, not a second.
    sys.modules.setdefault("compose_check", sys.modules[__name__])
    sys.exit(main())
