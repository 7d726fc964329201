"""LoopbackIdentity: the stand-in public identity (a state file) used by the demo and tests."""

from __future__ import annotations

import json
from pathlib import Path

from tandem.agent.identity import IdentityStatus, LoopbackIdentity, NetworkIdentity


def identity(tmp_path: Path, address: str = "127.0.0.1") -> LoopbackIdentity:
    return LoopbackIdentity(tmp_path / "identity" / "public.json", address)


async def test_starts_hidden(tmp_path: Path) -> None:
    status = await identity(tmp_path).status()
    assert (status.exposed, status.address) == (False, None)


async def test_expose_is_idempotent_and_status_follows(tmp_path: Path) -> None:
    ident = identity(tmp_path, "127.0.0.2")
    first = await ident.expose()
    assert first == IdentityStatus(exposed=True, address="127.0.0.2", detail="exposed")
    again = await ident.expose()
    assert (again.exposed, again.address, again.detail) == (True, "127.0.0.2", "already exposed")
    status = await ident.status()
    assert (status.exposed, status.address) == (True, "127.0.0.2")
    assert json.loads(ident.state_file.read_text())["address"] == "127.0.0.2"
    # Written via a temporary file renamed into place: nothing else is left beside it.
    assert [p.name for p in ident.state_file.parent.iterdir()] == ["public.json"]


async def test_hide_is_idempotent_and_status_follows(tmp_path: Path) -> None:
    ident = identity(tmp_path)
    await ident.expose()
    hidden = await ident.hide()
    assert (hidden.exposed, hidden.detail) == (False, "hidden")
    assert not ident.state_file.exists()
    again = await ident.hide()
    assert (again.exposed, again.detail) == (False, "already hidden")
    assert (await ident.status()).exposed is False


async def test_status_reads_the_file_not_memory(tmp_path: Path) -> None:
    """Another instance (a restarted agent) sees what is really there."""
    await identity(tmp_path).expose()
    assert (await identity(tmp_path).status()).exposed is True
    identity(tmp_path).state_file.unlink()
    assert (await identity(tmp_path).status()).exposed is False


async def test_a_corrupt_state_file_is_reported_not_trusted(tmp_path: Path) -> None:
    ident = identity(tmp_path)
    ident.state_file.parent.mkdir(parents=True)
    ident.state_file.write_text("{not json")
    status = await ident.status()
    assert status.exposed is False and "unreadable" in status.detail
    assert (await ident.expose()).exposed is True
    assert (await ident.status()).exposed is True


async def test_reset_on_start_hides_what_a_previous_run_exposed(tmp_path: Path) -> None:
    await identity(tmp_path).expose()
    restarted = identity(tmp_path)
    reset = await restarted.reset_on_start()
    assert reset.exposed is False and "was exposed" in reset.detail
    assert (await restarted.status()).exposed is False
    assert (await restarted.reset_on_start()).detail == "hidden at start"


def test_it_is_a_network_identity(tmp_path: Path) -> None:
    ident: NetworkIdentity = identity(tmp_path)
    assert ident is not None
