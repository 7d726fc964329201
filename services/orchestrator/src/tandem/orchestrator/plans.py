"""Sagas as data: the steps of a switchover and of a failover.

Switchover (the white paper's 7 steps, with the role change between them): on the Active,
stop the applications, drain the send queue, hide; the role changes (compare-and-set, epoch
+ 1: the pivot); on the target, apply the receive queue, expose, start intercepting, start
the applications. Before the pivot every step has an undo and a failure is compensated in
reverse; after it the saga only goes forward (retries, then an alert for an operator): the
old Active has already been fenced off by the new epoch. An automatic switchover (asked by a
rule) ends by stopping the old Active's replication, left for an operator to inspect.

Failover: the pivot, then the old Active is fenced (by the orchestrator itself, as
``fencing.py`` says: its guard's deadline, an operator's fence command or its VM powered
off) before anything is exposed; then the 4 steps on the target: apply the receive queue,
expose, start intercepting, start the applications. A failover from no Active (the record
named none) has nothing to fence.
"""

from __future__ import annotations

from tandem.events.catalog.sagas import SagaStepSpec

CHANGE_ROLE = "ChangeRole"
#: Carried out by the orchestrator, not sent: the step's node is the node to fence.
FENCE = "FenceOldActive"


def _step(
    name: str,
    node: str,
    command: str,
    epoch: int,
    timeout_s: float,
    compensation: str | None = None,
    pivot: bool = False,
) -> SagaStepSpec:
    return SagaStepSpec(
        name=name,
        node=node,
        command=command,
        timeout_s=timeout_s,
        epoch=epoch,
        compensation=compensation,
        pivot=pivot,
    )


def switchover_plan(
    old: str, new: str, epoch: int, *, timeout_s: float, automatic: bool = False
) -> list[SagaStepSpec]:
    """``epoch``: the cluster's epoch now (the old Active's); the target's steps carry +1."""
    after = epoch + 1
    plan = [
        _step("stop applications", old, "StopApplications", epoch, timeout_s, "StartApplications"),
        _step("drain send queue", old, "DrainSendQueue", epoch, timeout_s),
        _step("hide", old, "Hide", epoch, timeout_s, "Expose"),
        _step("change role", new, CHANGE_ROLE, after, timeout_s, pivot=True),
        _step("apply receive queue", new, "ApplyReceiveQueue", after, timeout_s),
        _step("expose", new, "Expose", after, timeout_s),
        _step("start intercepting", new, "StartIntercepting", after, timeout_s),
        _step("start applications", new, "StartApplications", after, timeout_s),
    ]
    if automatic:
        plan.append(_step("leave old Active stopped", old, "StopIntercepting", after, timeout_s))
    return plan


def failover_plan(old: str | None, new: str, epoch: int, *, timeout_s: float) -> list[SagaStepSpec]:
    """``old``: the Active lost (fenced after the pivot), None when there was none."""
    after = epoch + 1
    fence = (
        []
        if old is None or old == new
        else [_step("fence old Active", old, FENCE, after, timeout_s)]
    )
    return [
        _step("change role", new, CHANGE_ROLE, after, timeout_s, pivot=True),
        *fence,
        _step("apply receive queue", new, "ApplyReceiveQueue", after, timeout_s),
        _step("expose", new, "Expose", after, timeout_s),
        _step("start intercepting", new, "StartIntercepting", after, timeout_s),
        _step("start applications", new, "StartApplications", after, timeout_s),
    ]
