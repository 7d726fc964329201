"""Create or update Tandem's streams and KV buckets. Safe to run at every start."""

from __future__ import annotations

import asyncio
import logging

from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServerError

from tandem.events import subjects
from tandem.events.settings import StreamSettings

log = logging.getLogger(__name__)

#: JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058


def stream_configs(settings: StreamSettings) -> list[StreamConfig]:
    return [
        _stream(
            subjects.EVENTS_STREAM,
            "Tandem events: the system of record",
            subjects.EVENTS_ALL,
            settings,
            max_age=settings.events_max_age_s,
            deny_delete=True,
        ),
        _stream(
            subjects.JOURNAL_STREAM,
            "Tandem replication journal batches",
            subjects.JOURNAL_ALL,
            settings,
            max_age=settings.journal_max_age_s,
            max_bytes=settings.journal_max_bytes,
        ),
        _stream(
            subjects.DLQ_STREAM,
            "Messages a Tandem consumer could not decode or handle, with the reason",
            subjects.DLQ_ALL,
            settings,
            max_age=settings.dlq_max_age_s,
        ),
    ]


def _stream(
    name: str,
    description: str,
    subject: str,
    settings: StreamSettings,
    *,
    max_age: float,
    max_bytes: int = -1,
    deny_delete: bool = False,
) -> StreamConfig:
    return StreamConfig(
        name=name,
        description=description,
        subjects=[subject],
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        duplicate_window=settings.duplicate_window_s,
        max_age=max_age,
        max_bytes=max_bytes,
        deny_delete=deny_delete,
    )


def bucket_configs(settings: StreamSettings) -> list[KeyValueConfig]:
    return [
        KeyValueConfig(
            bucket=subjects.ROLES_BUCKET,
            description="Per cluster: the Active node and the epoch (compare-and-set only)",
            history=16,
            storage=StorageType.FILE,
            replicas=settings.replicas,
        ),
        KeyValueConfig(
            bucket=subjects.CONFIG_BUCKET,
            description="Cluster, group and rule definitions",
            history=8,
            storage=StorageType.FILE,
            replicas=settings.replicas,
        ),
        KeyValueConfig(
            bucket=subjects.LEASES_BUCKET,
            description="Orchestrator leader and node liveness leases",
            history=1,
            # Liveness is not a record: a lease lost with the servers only looks like
            # silence, which is waited out. In memory, a renewal never queues behind disk
            # writes (fsync of the journal, an operator's backup): no false fence from that.
            storage=StorageType.MEMORY,
            replicas=settings.replicas,
        ),
    ]


async def provision(
    js: JetStreamContext, settings: StreamSettings, *, update_existing: bool = True
) -> list[str]:
    """Ensure every stream and bucket exists with the configured limits.

    With ``update_existing=False`` (what services do at start) an existing stream whose
    limits differ is left alone and reported: only an operator's ``tandem bus provision``
    or ``tandem up`` changes limits, so one misconfigured service cannot shrink them.
    Returns one line per object saying what was done.
    """
    done = [await _ensure_stream(js, cfg, update_existing) for cfg in stream_configs(settings)]
    for kv_cfg in bucket_configs(settings):
        done.append(await _ensure_bucket(js, kv_cfg, update_existing))
    for line in done:
        log.info("provisioning: %s", line)
    return done


async def restore_bucket(js: JetStreamContext, settings: StreamSettings, bucket: str) -> str:
    """Make ``bucket`` again as provisioning would, when it is missing: a memory bucket
    (``tandem_leases``) is gone after the whole bus restarted, and nobody could renew a lease
    until an operator provisioned again."""
    cfg = next(c for c in bucket_configs(settings) if c.bucket == bucket)
    return await _ensure_bucket(js, cfg, update=False)


async def _ensure_stream(js: JetStreamContext, cfg: StreamConfig, update: bool) -> str:
    try:
        info = await js.stream_info(cfg.name or "")
    except NotFoundError:
        for attempt in range(20):
            try:
                await js.add_stream(cfg)
                break
            except TimeoutError:
                # A create this identity may not make is dropped by the server unanswered.
                raise TimeoutError(
                    f"stream {cfg.name} is missing and creating it got no answer: an identity "
                    "without the admin's rights cannot create it (run `tandem bus provision`)"
                ) from None
            except ServerError as exc:
                # "error creating store for stream": the files of a stream of that name,
                # deleted a moment ago, are still being removed (seen under load in CI).
                if exc.err_code != _STORE_NOT_CREATED or attempt == 19:
                    raise
                await asyncio.sleep(0.25)
        return f"stream {cfg.name} created"
    if _same_stream(info.config, cfg):
        return f"stream {cfg.name} unchanged"
    if not update:
        return f"stream {cfg.name} exists with other limits; left as it is"
    await js.update_stream(cfg)
    return f"stream {cfg.name} updated"


_STORE_NOT_CREATED = 10049


def _same_stream(have: StreamConfig, want: StreamConfig) -> bool:
    fields = ("subjects", "max_age", "max_bytes", "num_replicas", "duplicate_window", "deny_delete")
    return all(_norm(getattr(have, f)) == _norm(getattr(want, f)) for f in fields)


def _same_bucket(have: StreamConfig, want: KeyValueConfig) -> bool:
    return (
        have.max_msgs_per_subject == want.history
        and (have.num_replicas or 1) == want.replicas
        and have.storage == want.storage
    )


def _norm(value: object) -> object:
    # The server reports unset limits as -1 or 0 where the client config says None.
    return None if value in (None, -1, 0, False) else value


async def _ensure_bucket(js: JetStreamContext, cfg: KeyValueConfig, update: bool) -> str:
    if not update:
        # A service only looks: with least privilege (issue 17) it may read stream info but
        # not create streams, and a refused create would only time out.
        try:
            info = await js.stream_info(f"KV_{cfg.bucket}")
        except NotFoundError:
            pass
        else:
            if _same_bucket(info.config, cfg):
                return f"bucket {cfg.bucket} ready"
            return f"bucket {cfg.bucket} exists with other limits; left as it is"
    try:
        await js.create_key_value(cfg)
        return f"bucket {cfg.bucket} ready"
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
    if not update:
        return f"bucket {cfg.bucket} exists with other limits; left as it is"
    # It exists with other limits (e.g. replicas changed): bring the backing stream in line.
    info = await js.stream_info(f"KV_{cfg.bucket}")
    stream_cfg = info.config
    stream_cfg.num_replicas = cfg.replicas
    stream_cfg.max_msgs_per_subject = cfg.history
    stream_cfg.description = cfg.description
    await js.update_stream(stream_cfg)
    return f"bucket {cfg.bucket} updated"
