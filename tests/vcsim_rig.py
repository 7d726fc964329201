"""govmomi's vCenter simulator for tests: built once from ``tests/vcsim/main.go``, one
simulator per test module on a random port, restartable for a clean model.

Debian's ``golang-github-vmware-govmomi-dev`` ships the simulator library under
/usr/share/gocode; ``go`` (``golang-go``) builds our small command against it in GOPATH
mode. The binary is cached under ``~/.cache/tandem-vcsim/<hash of source and go version>``
(``TANDEM_VCSIM_CACHE`` overrides the folder). A test module gets the fixtures
``vcsim_binary`` (session) and ``vcsim`` (module) by importing them:
``from vcsim_rig import vcsim_binary_fixture, vcsim_fixture``.

The default model (``simulator.VPX()``, with 4 hosts in the cluster and 3 datastores):
datacenter DC0; standalone host DC0_H0 with VMs DC0_H0_VM0 (VMware Tools running, answers
RebootGuest) and DC0_H0_VM1; cluster DC0_C0 with hosts DC0_C0_H0..H3 and VMs
DC0_C0_RP0_VM0, DC0_C0_RP0_VM1; datastores LocalDS_0..2 on every host. Host load and
datastore free space differ (``-vary-load``). The TLS certificate is self-signed (its PEM
in ``Vcsim.ca_file``): tests connect with verification off (lab mode) unless they test it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require
from process_rig import LoggedProcess

SOURCE_DIR = Path(__file__).parent / "vcsim"
GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")
CACHE = Path(os.environ.get("TANDEM_VCSIM_CACHE", Path.home() / ".cache" / "tandem-vcsim"))
USERNAME = "tandem"
PASSWORD = "vcsim-secret"
TOOLS_VM = "DC0_H0_VM0"
DEFAULT_ARGS = ("-host", "4", "-ds", "3", "-vary-load", "-tools-running", TOOLS_VM)
READY = re.compile(r"^vcsim ready (https://([^/:]+):(\d+)/sdk)")
START_TIMEOUT_S = 30.0


class VcsimError(RuntimeError):
    pass


def _go_version(go: str) -> str:
    return subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout


def build_vcsim() -> Path:
    """The simulator binary, built if the cache has none for this source and go version."""
    go = shutil.which("go")
    require("go", go is not None, "install the Go toolchain (Debian: apt-get install golang-go)")
    assert go is not None
    require(
        "govmomi",
        GOVMOMI.is_dir(),
        f"{GOVMOMI} is missing (Debian: apt-get install golang-github-vmware-govmomi-dev)",
    )
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.glob("*.go")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(_go_version(go).encode())
    target = CACHE / digest.hexdigest()[:16] / "vcsim"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time across processes
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="tandem-vcsim-") as gopath:
            env = {
                **os.environ,
                "GO111MODULE": "off",
                "GOPATH": f"/usr/share/gocode:{gopath}",
                "GOFLAGS": "",
                "CGO_ENABLED": "0",
            }
            partial = target.with_suffix(".partial")
            built = subprocess.run(
                [go, "build", "-o", str(partial), "."],
                cwd=SOURCE_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if built.returncode != 0:
                missing = sorted(set(re.findall(r'cannot find package "([^"]+)"', built.stderr)))
                hint = f" (missing Go packages: {', '.join(missing)})" if missing else ""
                raise VcsimError(f"building the simulator failed{hint}:\n{built.stderr}")
            partial.replace(target)
    return target


class Vcsim:
    """One simulator process. ``restart()`` gives a clean model on the same port."""

    def __init__(self, binary: Path, args: tuple[str, ...] = DEFAULT_ARGS) -> None:
        self.binary = binary
        self.args = args
        self.port = 0
        self.host = "127.0.0.1"
        self.url = ""
        self.proc: LoggedProcess | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="tandem-vcsim-"))
        #: The simulator's output (stdout and stderr), appended to at each start.
        self.log_path = self.workdir / "vcsim.log"
        #: The server's self-signed certificate (PEM), to verify it against.
        self.ca_file = self.workdir / "vcsim-ca.pem"

    def start(self) -> Vcsim:
        cmd = [
            str(self.binary),
            "-listen",
            f"127.0.0.1:{self.port}",
            "-username",
            USERNAME,
            "-password",
            PASSWORD,
            "-cert-out",
            str(self.ca_file),
            *self.args,
        ]
        self.proc = LoggedProcess.start("vcsim", cmd, self.log_path)
        try:
            match = self.proc.wait_for(READY, START_TIMEOUT_S, VcsimError)
        except VcsimError:
            self.stop()
            raise
        self.url, self.host, self.port = match[1], match[2], int(match[3])
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.stop(timeout=10)  # SIGTERM: main.go removes its datastore folders on the way out

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, args: tuple[str, ...] | None = None) -> Vcsim:
        """A fresh model (optionally with other flags), same address."""
        self.stop()
        if args is not None:
            self.args = args
        return self.start()

    def connect(self, password: str = PASSWORD) -> Any:
        """A pyVmomi service instance (TLS verification off: lab mode)."""
        from pyVim.connect import SmartConnect

        return SmartConnect(
            host=self.host,
            port=self.port,
            user=USERNAME,
            pwd=password,
            disableSslCertValidation=True,
        )

    def write_config(
        self,
        folder: Path,
        *,
        password: str = PASSWORD,
        vms: dict[str, dict[str, str]] | None = None,
        task_timeout_s: float = 30.0,
        verify_tls: bool = False,
        ca_file: Path | None = None,
    ) -> Path:
        """A bridge config file (and its credentials file) for this simulator; TLS
        verification off (lab mode) unless asked for."""
        folder.mkdir(parents=True, exist_ok=True)
        write_credentials(folder / "vcenter-credentials.toml", password)
        lines = [
            "[vcenter]",
            f'host = "{self.host}"',
            f"port = {self.port}",
            'credentials_file = "vcenter-credentials.toml"',
            f"verify_tls = {str(verify_tls).lower()}",
            f"task_timeout_s = {task_timeout_s}",
            "task_poll_s = 0.1",
            "http_timeout_s = 20",
        ]
        if ca_file is not None:
            lines.append(f'ca_file = "{ca_file}"')
        for cluster, nodes in (vms or {}).items():
            lines.append(f"[vms.{cluster}]")
            lines.extend(f'{node} = "{vm}"' for node, vm in nodes.items())
        path = folder / "vmware_bridge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


def write_credentials(path: Path, password: str = PASSWORD) -> None:
    path.write_text(f'username = "{USERNAME}"\npassword = "{password}"\n')
    path.chmod(0o600)


@contextlib.contextmanager
def running_vcsim(binary: Path, args: tuple[str, ...] = DEFAULT_ARGS) -> Iterator[Vcsim]:
    sim = Vcsim(binary, args)
    try:
        yield sim.start()
    finally:
        sim.close()


@pytest.fixture(scope="session", name="vcsim_binary")
def vcsim_binary_fixture() -> Path:
    """The simulator binary (built once per cache key)."""
    try:
        return build_vcsim()
    except VcsimError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module", name="vcsim")
def vcsim_fixture(vcsim_binary: Path) -> Iterator[Vcsim]:
    """One simulator for the test module, with the default model."""
    with running_vcsim(vcsim_binary) as sim:
        yield sim
