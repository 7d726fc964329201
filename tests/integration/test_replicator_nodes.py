"""Two replicator nodes as the agent runs them (the service entry, on a real bus): the Active
captures (watch and intercept), the Passive applies; verify on command; sync mode."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import eventually
from replication_rig import events_of, fuse_ready, node, tree
from tandem.events.bus import Bus
from tandem.events.catalog import VerifyReplica
from tandem.events.catalog.commands import VerifyReplicaPayload
from tandem.events.rpc import send_command
from tandem.events.subjects import JOURNAL_STREAM, journal_subject
from tandem.replicator.batch import unpack
from tandem.replicator.source import CLEAN_MARK


def write_tree(root: Path, tag: str) -> None:
    (root / "db").mkdir(exist_ok=True)
    for i in range(5):
        (root / "db" / f"table{i}").write_bytes(os.urandom(100_000) + tag.encode())
    (root / "db" / "table0").rename(root / "db" / f"moved-{tag}")
    (root / "db" / "table1").unlink()


@pytest.mark.parametrize("capture", ["watch", "intercept"])
async def test_the_passive_follows_what_the_application_does(
    bus: Bus, tmp_path: Path, capture: str
) -> None:
    if capture == "intercept":
        fuse_ready()
    source, replica = tmp_path / "a" / "data", tmp_path / "b" / "data"
    source.mkdir(parents=True)
    replica.mkdir(parents=True)
    async with (
        node(bus, source, "primary", capture=capture, initial_role="active"),
        node(bus, replica, "secondary"),
    ):
        await eventually(lambda: started(bus, 2), timeout=30, what="both sides to start")
        await asyncio.to_thread(write_tree, source, "one")
        await eventually(
            lambda: tree(replica) == tree(source), timeout=60, what="the replica to follow"
        )
        states = await events_of(bus, "ReplicationStateChanged")
        # A new target says it is not verified yet, until the source's verify at start
        # confirms it; after that it never falls out of sync.
        assert states[0].payload.state == "out_of_sync"
        assert "not known to match its source" in states[0].payload.reason
        first_in_sync = next(i for i, e in enumerate(states) if e.payload.state == "in_sync")
        assert all(e.payload.state != "out_of_sync" for e in states[first_in_sync:])


async def started(bus: Bus, sides: int) -> bool:
    return len(await events_of(bus, "ReplicationStarted")) >= sides


async def test_verify_on_command_repairs_a_replica_changed_behind_tandems_back(
    bus: Bus, tmp_path: Path
) -> None:
    source, replica = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    replica.mkdir()
    (source / "existing").write_bytes(b"was there before pairing")
    async with node(bus, source, "primary", initial_role="active"), node(bus, replica, "secondary"):
        await eventually(lambda: started(bus, 2), timeout=30, what="both sides to start")
        result = await send_command(
            bus,
            VerifyReplica(
                cluster="demo",
                node="primary",
                epoch=1,
                payload=VerifyReplicaPayload(reason="first pairing"),
            ),
            timeout=60,
        )
        assert result.ok, result.reason
        assert tree(replica) == tree(source)
        (replica / "existing").write_bytes(b"tampered")  # a change Tandem did not make
        result = await send_command(
            bus,
            VerifyReplica(cluster="demo", node="primary", epoch=1, payload=VerifyReplicaPayload()),
            timeout=60,
        )
        assert result.ok and result.data["secondary"]["files_out_of_sync"] == 1
        assert (replica / "existing").read_bytes() == b"was there before pairing"
    done = await events_of(bus, "SyncCompleted")
    # The verify at start may find the target not up yet; it is retried, and says why.
    failed = [e.payload.reason for e in done if not e.payload.ok]
    assert all("is not serving manifests" in r for r in failed), failed
    assert done[-1].payload.files_out_of_sync == 1, "the last verify fixed the tampered file"


async def test_sync_mode_degrades_with_an_alert_when_no_target_answers(
    bus: Bus, tmp_path: Path
) -> None:
    fuse_ready()
    source = tmp_path / "a"
    source.mkdir()
    async with node(
        bus,
        source,
        "primary",
        capture="intercept",
        mode="sync",
        sync_timeout_s=0.5,
        initial_role="active",
    ):
        await eventually(lambda: started(bus, 1), timeout=30, what="the source side")
        await asyncio.to_thread((source / "f").write_bytes, b"no target is listening")
        assert (source / "f").read_bytes() == b"no target is listening"
        await eventually(lambda: _alert_raised(bus), timeout=20, what="the degrade alert")


async def _alert_raised(bus: Bus) -> bool:
    alerts = await events_of(bus, "AlertRaised")
    return any(a.payload.code == "replicator.sync_degraded" for a in alerts)


async def test_sync_mode_write_returns_once_the_target_stored_it(bus: Bus, tmp_path: Path) -> None:
    fuse_ready()
    source, replica = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    replica.mkdir()
    async with (
        node(bus, replica, "secondary"),
        node(
            bus,
            source,
            "primary",
            capture="intercept",
            mode="sync",
            sync_policy="block",
            initial_role="active",
        ),
    ):
        await eventually(lambda: started(bus, 2), timeout=30, what="both sides")
        await asyncio.to_thread((source / "f").write_bytes, b"acknowledged = on the target")
        # The write returned: the target had the batch on disk (receive queue) by then.
        await eventually(
            lambda: _content(replica / "f") == b"acknowledged = on the target", what="apply"
        )
    assert await events_of(bus, "AlertRaised") == []


async def test_tandem_verify_repairs_a_cluster_replica(
    bus: Bus, tmp_path: Path, nats_server: Any
) -> None:
    source, replica = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    replica.mkdir()
    (source / "db").mkdir()
    (source / "db" / "data").write_bytes(os.urandom(300_000))
    (replica / "stale").write_bytes(b"not on the source")
    async with node(bus, source, "primary", initial_role="active"), node(bus, replica, "secondary"):
        await eventually(lambda: started(bus, 2), timeout=30, what="both sides to start")
        out = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "tandem.cli",
                "verify",
                "--cluster",
                "demo",
                "--bus",
                nats_server.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "secondary" in out.stdout and "replica matches" in out.stdout
        assert tree(replica) == tree(source)


def test_tandem_verify_of_two_local_folders(tmp_path: Path) -> None:
    source, replica = tmp_path / "s", tmp_path / "r"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_bytes(os.urandom(200_000))
    (replica / "junk").mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "tandem.cli",
        "verify",
        "--source",
        str(source),
        "--replica",
        str(replica),
    ]
    first = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}
    )
    assert first.returncode == 0 and "replica matches" in first.stdout
    assert tree(replica) == tree(source)
    again = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"}
    )
    assert again.returncode == 0 and "│ 0 " in again.stdout


def test_tandem_verify_names_what_is_missing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "verify", "--source", "/tmp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "needs both --source and --replica" in out.stderr


async def test_a_passive_back_after_the_stream_dropped_its_batches_is_verified_and_converges(
    bus: Bus, tmp_path: Path
) -> None:
    source, replica = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    replica.mkdir()
    async with node(bus, source, "primary", initial_role="active"):
        async with node(bus, replica, "secondary", gap_timeout_s=0.5):
            await eventually(lambda: started(bus, 2), timeout=30, what="both sides to start")
            await asyncio.to_thread((source / "first").write_bytes, b"while the passive is up")
            await eventually(lambda: (replica / "first").exists(), timeout=30, what="first file")
        # The Passive is away; the journal moves on and loses what it had (retention).
        seen = (await bus.js.stream_info(JOURNAL_STREAM)).state.last_seq
        await asyncio.to_thread((source / "second").write_bytes, b"while the passive is away")
        await asyncio.to_thread((source / "third").write_bytes, b"also while away")
        await eventually(lambda: _journal_past(bus, seen + 1), timeout=30, what="new batches")
        await bus.js.purge_stream(JOURNAL_STREAM, keep=1)
        # The source may still add batches after the purge; what matters is that a batch the
        # Passive never saw is gone.
        assert (await bus.js.stream_info(JOURNAL_STREAM)).state.first_seq > seen + 1
        async with node(bus, replica, "secondary", gap_timeout_s=0.5):
            await eventually(lambda: tree(replica) == tree(source), timeout=60, what="convergence")
            await eventually(lambda: _last_state_is(bus, "in_sync"), timeout=60, what="in sync")
    states = [e.payload.state for e in await events_of(bus, "ReplicationStateChanged")]
    assert "out_of_sync" in states


def _content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def _last_state_is(bus: Bus, state: str) -> bool:
    states = await events_of(bus, "ReplicationStateChanged")
    return bool(states) and states[-1].payload.state == state


async def _journal_past(bus: Bus, seq: int) -> bool:
    return (await bus.js.stream_info(JOURNAL_STREAM)).state.last_seq > seq


async def test_sync_mode_with_block_policy_holds_the_writer_until_a_target_stores(
    bus: Bus, tmp_path: Path
) -> None:
    fuse_ready()
    source, replica = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    replica.mkdir()
    async with node(
        bus,
        source,
        "primary",
        capture="intercept",
        mode="sync",
        sync_policy="block",
        sync_timeout_s=0.2,
        initial_role="active",
    ):
        await eventually(lambda: started(bus, 1), timeout=30, what="the source side")
        writer = asyncio.create_task(asyncio.to_thread((source / "f").write_bytes, b"waits"))
        done, _ = await asyncio.wait({writer}, timeout=1.5)
        assert not done, "with no target the write does not return"
        async with node(bus, replica, "secondary"):
            await asyncio.wait_for(writer, timeout=60)
            # Stored (the write returned) comes before applied: wait for the content.
            await eventually(lambda: _content(replica / "f") == b"waits", timeout=30, what="apply")


async def test_a_stopped_source_publishes_what_it_captured_then_marks_the_stop_clean(
    bus: Bus, tmp_path: Path
) -> None:
    """The last change before a stop (in a batch still open when the node is cancelled) is in
    the journal afterwards, and only then is the stop marked clean."""
    fuse_ready()
    source, state = tmp_path / "a" / "data", tmp_path / "a" / "state"
    source.mkdir(parents=True)
    # A batch waits up to a minute to fill: only the stop's drain can send this one. Intercept
    # queues the op before the write returns.
    async with node(
        bus,
        source,
        "primary",
        capture="intercept",
        initial_role="active",
        state_dir=state,
        batch_age_s=60,
    ):
        await eventually(lambda: started(bus, 1), timeout=30, what="the source to start")
        await asyncio.to_thread((source / "last-words").write_bytes, b"written before the stop")
    assert (state / CLEAN_MARK).exists(), "the drain completed"
    last = await bus.js.get_last_msg(JOURNAL_STREAM, journal_subject("demo"))
    batch = unpack(last.data, dict(last.headers or {}))
    assert any(op.path == "last-words" and op.data for op in batch.ops)


async def test_a_verified_replica_stays_verified_across_a_restart_and_a_source_does_not(
    bus: Bus, tmp_path: Path
) -> None:
    """A new target is out of sync until verified (the orchestrator's guard then refuses to
    move the cluster onto it); once a verify confirmed it, a restart keeps that. While a
    node is the source it is not known to match as a replica (were it to die, the next
    source might lack what it wrote last); once it stopped cleanly, it is."""
    source, replica = tmp_path / "a" / "data", tmp_path / "b" / "data"
    source.mkdir(parents=True)
    replica.mkdir(parents=True)
    source_state, target_state = tmp_path / "a" / "state", tmp_path / "b" / "state"
    async with node(bus, source, "primary", initial_role="active", state_dir=source_state):
        async with node(bus, replica, "secondary", state_dir=target_state):
            await eventually(lambda: _last_state(bus, "in_sync"), 60, "verified in sync")
        assert (target_state / "replica-verified").exists()
        assert not (source_state / "replica-verified").exists()
        before = len(await events_of(bus, "ReplicationStateChanged"))
        async with node(bus, replica, "secondary", state_dir=target_state):
            await eventually(lambda: started(bus, 3), 30, "the target to start again")
            await asyncio.sleep(1.0)
        after = (await events_of(bus, "ReplicationStateChanged"))[before:]
        assert all(e.payload.state != "out_of_sync" for e in after), after
    assert (source_state / "replica-verified").exists()  # stopped cleanly: all drained


async def _last_state(bus: Bus, state: str) -> bool:
    states = await events_of(bus, "ReplicationStateChanged")
    return bool(states) and states[-1].payload.state == state


async def test_a_source_restarted_after_a_crash_says_its_targets_may_lack_its_writes(
    bus: Bus, tmp_path: Path
) -> None:
    """Its ReplicationStarted carries ``unverified_targets`` (the orchestrator then holds the
    targets out of sync until verified); a first start, or one after a clean stop, does not.
    The crash is the state dir a SIGKILL leaves: no clean-stop mark, no verified mark."""
    source, state = tmp_path / "a" / "data", tmp_path / "a" / "state"
    source.mkdir(parents=True)
    for n in (1, 2):
        async with node(bus, source, "primary", initial_role="active", state_dir=state):
            await eventually(lambda n=n: started(bus, n), 30, "the source to start")
    assert (state / CLEAN_MARK).exists()
    (state / CLEAN_MARK).unlink()
    (state / "replica-verified").unlink(missing_ok=True)
    async with node(bus, source, "primary", initial_role="active", state_dir=state):
        await eventually(lambda: started(bus, 3), 30, "the source to start again")
    first, clean, crashed = [e.payload for e in await events_of(bus, "ReplicationStarted")]
    assert (first.unverified_targets, clean.unverified_targets) == ("", "")  # type: ignore[attr-defined]
    assert "did not stop cleanly" in crashed.unverified_targets  # type: ignore[attr-defined]


async def test_a_target_killed_while_being_verified_comes_back_unverified(
    bus: Bus, tmp_path: Path
) -> None:
    """A verify that began (the target served its first manifest) and made apply skip an op
    (as a verify does: its passes repair it) leaves the replica not known to match; if its
    end never comes (the target is killed), the target, restarted, says so (out of sync, not
    verified) and is verified again. A target restarted with its verify ended well says in
    sync at once (chaos s092: the view kept the old process's 'syncing' for good)."""
    import json

    from tandem.replicator.syncproto import sync_subject

    source, replica = tmp_path / "a" / "data", tmp_path / "b" / "data"
    source.mkdir(parents=True)
    replica.mkdir(parents=True)
    (source / "kept").write_bytes(b"one")
    target_state = tmp_path / "b" / "state"

    async def reasons_after(count: int) -> list[tuple[str, str]]:
        states = await events_of(bus, "ReplicationStateChanged")
        return [(e.payload.state, e.payload.reason) for e in states[count:]]

    async with node(bus, source, "primary", initial_role="active"):
        async with node(bus, replica, "secondary", state_dir=target_state):
            await eventually(
                lambda: tree(replica) == tree(source), timeout=60, what="the first verify"
            )
            await eventually(lambda: _said(bus, "in_sync"), timeout=60, what="the target verified")
        before = len(await events_of(bus, "ReplicationStateChanged"))
        async with node(bus, replica, "secondary", state_dir=target_state):
            await eventually(
                lambda: _said(bus, "in_sync", after=before), timeout=60, what="in sync at start"
            )
            said = await reasons_after(before)
            assert said[0][0] == "in_sync" and "verified before" in said[0][1], said
            # A verify begins (the source asks for a manifest): while nothing is skipped the
            # replica is still the journal's beginning, verified as before.
            ask = {"op": "manifest", "upto": [0, 0], "timeout": 5}
            await bus.nc.request(
                sync_subject("demo", "secondary"), json.dumps(ask).encode(), timeout=30
            )
            mark = target_state / "replica-verified"
            assert mark.exists()
            # Then an op the replica cannot take (its file was removed behind Tandem's back)
            # is skipped, as a verify does: the mark goes; then the target dies.
            (source / "moved").write_bytes(b"two")
            await eventually(lambda: (replica / "moved").exists(), timeout=60, what="moved")
            (replica / "moved").unlink()
            (source / "moved").rename(source / "renamed")
            await eventually(lambda: not mark.exists(), timeout=60, what="the mark withdrawn")
        before = len(await events_of(bus, "ReplicationStateChanged"))
        async with node(bus, replica, "secondary", state_dir=target_state):
            await eventually(
                lambda: _said(bus, "out_of_sync", after=before), timeout=60, what="unverified"
            )
            said = await reasons_after(before)
            assert "killed while being verified" in said[0][1], said
            # The source verifies it on that report; it ends in sync and verified again.
            await eventually(
                lambda: _said(bus, "in_sync", after=before), timeout=90, what="verified again"
            )
            assert (target_state / "replica-verified").exists()


async def _said(bus: Bus, state: str, after: int = 0) -> bool:
    states = await events_of(bus, "ReplicationStateChanged")
    return any(e.payload.state == state for e in states[after:])
