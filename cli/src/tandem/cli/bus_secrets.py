"""``tandem bus secrets DIR``: a deployment's bus secrets, laid out for docker compose (issue 17).

``DIR`` gets what ``SecureBusFiles`` writes (the operator's copy: ``tls/`` with the CA key,
``passwords.json``, ``identities.json``) and, for the containers::

    DIR/nats/       what the nats servers mount (at --nats-dir): auth.conf (the
                    authorization block and the client port's TLS), routes.conf (the routes'
                    mutual TLS), ca.pem, server.pem, server-key.pem. No CA key: it stays here.
    DIR/ca.pem      the CA certificate the services mount (at --ca-file): not secret, 0644,
                    as a container's user is not the host's.
    DIR/env/*.env   each identity's login for compose's ``env_file`` (0600: the password).

Running it again keeps every password and the certificates; ``--rotate USER`` replaces that
user's password only, ``--new-certificates`` makes a new CA and certificates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer
from cryptography import x509
from rich.console import Console

from tandem.events.bus_auth import DEFAULT_ROUNDS, authorization_config
from tandem.events.bus_tls import DEFAULT_SERVER_NAMES, route_tls_block, server_tls_config
from tandem.events.private_files import write_private
from tandem.events.secure_bus import SecureBusFiles

#: Where docker-compose.yml mounts DIR/nats in the nats servers and DIR/ca.pem in services.
NATS_DIR = PurePosixPath("/etc/nats/secrets")
CA_FILE = PurePosixPath("/etc/tandem/bus-ca.pem")


def env_file_name(user: str) -> str:
    """``agent:demo:primary`` -> ``agent-demo-primary.env`` (a plain file name)."""
    return user.replace(":", "-") + ".env"


def parse_clusters(values: Iterable[str]) -> dict[str, list[str]]:
    """``["demo=primary,secondary"]`` -> ``{"demo": ["primary", "secondary"]}``."""
    clusters: dict[str, list[str]] = {}
    for value in values:
        name, sep, nodes = value.partition("=")
        names = [n.strip() for n in nodes.split(",") if n.strip()]
        if not sep or not name.strip() or not names:
            raise ValueError(f"--cluster {value!r}: expected NAME=node1,node2")
        if name.strip() in clusters:
            raise ValueError(f"--cluster {name.strip()!r} is given twice")
        clusters[name.strip()] = names
    return clusters


def certificate_names(path: Path) -> list[str]:
    """The DNS names and IP addresses a server certificate is valid for."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return ips + list(san.get_values_for_type(x509.DNSName))


def _server_names(folder: Path, given: Sequence[str], new_certificates: bool) -> list[str]:
    """The names the server certificate is made for: 127.0.0.1/localhost (operators on the
    host) and those given, else those of the certificate there. A name the kept certificate
    lacks is an error: it would be silently ignored."""
    current = folder / "tls" / "server.pem"
    if not given and current.exists():
        return certificate_names(current)
    names = list(dict.fromkeys([*DEFAULT_SERVER_NAMES, *given]))
    if current.exists() and not new_certificates:
        missing = [n for n in names if n not in certificate_names(current)]
        if missing:
            raise ValueError(
                f"the server certificate in {folder} is not for {', '.join(missing)}: "
                "add --new-certificates to make new ones"
            )
    return names


def write_bus_secrets(
    folder: Path,
    clusters: Mapping[str, Sequence[str]] | None = None,
    *,
    rotate: Iterable[str] = (),
    server_names: Sequence[str] = (),
    new_certificates: bool = False,
    nats_dir: PurePosixPath = NATS_DIR,
    ca_file: PurePosixPath = CA_FILE,
    rounds: int = DEFAULT_ROUNDS,
) -> SecureBusFiles:
    """Write (or update) ``folder`` as the module's docstring says. ``clusters`` None: the
    clusters the folder was made for (none for a new folder)."""
    if clusters is None:
        known = folder / "identities.json"
        clusters = SecureBusFiles.load(folder).clusters if known.exists() else {}
    names = _server_names(folder, server_names, new_certificates)
    files = SecureBusFiles.create(
        folder,
        clusters,
        server_names=names,
        rotate=rotate,
        new_certificates=new_certificates,
        rounds=rounds,
    )
    _write_nats_folder(files, nats_dir, rounds)
    write_private(folder / "ca.pem", files.tls.ca_cert.read_bytes())
    (folder / "ca.pem").chmod(0o644)
    _write_env_files(files, ca_file)
    return files


def _write_nats_folder(files: SecureBusFiles, nats_dir: PurePosixPath, rounds: int) -> None:
    out = files.folder / "nats"
    out.mkdir(mode=0o700, exist_ok=True)
    for source in (files.tls.ca_cert, files.tls.server_cert, files.tls.server_key):
        write_private(out / source.name, source.read_bytes())
    # The same files as the servers see them, inside their containers.
    inside = dataclasses.replace(
        files.tls,
        ca_cert=Path(str(nats_dir / files.tls.ca_cert.name)),
        server_cert=Path(str(nats_dir / files.tls.server_cert.name)),
        server_key=Path(str(nats_dir / files.tls.server_key.name)),
    )
    identities = list(files.identities.values())
    auth = authorization_config(identities, files.passwords, rounds=rounds)
    write_private(out / "auth.conf", auth + server_tls_config(inside))
    write_private(out / "routes.conf", route_tls_block(inside) + "\n")


def _write_env_files(files: SecureBusFiles, ca_file: PurePosixPath) -> None:
    out = files.folder / "env"
    out.mkdir(mode=0o700, exist_ok=True)
    wanted = {env_file_name(user): user for user in files.identities}
    for stale in out.glob("*.env"):
        if stale.name not in wanted:  # an identity no longer there (a node removed)
            stale.unlink()
    for name, user in wanted.items():
        env = {**files.login_env(user), "TANDEM_BUS_TLS_CA_FILE": str(ca_file)}
        lines = [f"# The bus login of {user} (tandem bus secrets), for compose's env_file."]
        write_private(out / name, "\n".join([*lines, *(f"{k}={v}" for k, v in env.items())]) + "\n")


def secrets_command(
    folder: Annotated[Path, typer.Argument(help="The secrets folder, e.g. ./bus-secrets.")],
    cluster: Annotated[
        list[str] | None,
        typer.Option(
            "--cluster",
            help="NAME=node1,node2: a cluster and its nodes (repeat per cluster; "
            "default: those the folder was made for).",
        ),
    ] = None,
    rotate: Annotated[
        list[str] | None,
        typer.Option("--rotate", help="Give this identity a new password (repeatable)."),
    ] = None,
    server_name: Annotated[
        list[str] | None,
        typer.Option(
            "--server-name",
            help="A host name the nats servers are reached by (repeatable; 127.0.0.1 and "
            "localhost are always in).",
        ),
    ] = None,
    new_certificates: Annotated[
        bool, typer.Option("--new-certificates", help="Make a new CA and certificates.")
    ] = False,
    nats_dir: Annotated[str, typer.Option(help="Where the nats servers see DIR/nats.")] = str(
        NATS_DIR
    ),
    ca_file: Annotated[str, typer.Option(help="Where the services see DIR/ca.pem.")] = str(CA_FILE),
    bcrypt_rounds: Annotated[
        int, typer.Option(help="bcrypt work factor of the password hashes.", min=4, max=16)
    ] = DEFAULT_ROUNDS,
) -> None:
    """Write the bus's CA, certificates, passwords and server config for docker compose;
    again: keep them, or rotate what is named. Prints no password."""
    console = Console()
    try:
        files = write_bus_secrets(
            folder,
            parse_clusters(cluster) if cluster else None,
            rotate=rotate or (),
            server_names=server_name or (),
            new_certificates=new_certificates,
            nats_dir=PurePosixPath(nats_dir),
            ca_file=PurePosixPath(ca_file),
            rounds=bcrypt_rounds,
        )
    except (ValueError, OSError) as exc:
        Console(stderr=True).print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"bus secrets in {files.folder} (passwords in passwords.json and env/*.env)")
    console.print(f"  identities: {', '.join(files.identities)}", soft_wrap=True)
    names = ", ".join(certificate_names(files.tls.server_cert))
    console.print(f"  server certificate for: {names}", soft_wrap=True)
    if rotate or new_certificates:
        console.print(
            "Now reload the nats servers (docker-compose kill -s HUP nats-1 nats-2 nats-3; "
            "new certificates: docker-compose restart) and recreate the services that log in "
            "with what changed (docker-compose up -d --force-recreate SERVICE).",
            soft_wrap=True,
        )
