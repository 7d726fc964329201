"""A fake command runner for the agent's controls and identities (``tandem.agent.control.runner.
Runner``): it answers each argv from a script and records every argv it was given.

``RecordingRunner({("systemctl", "show", ...): [(0, out, ""), ...]})``: the replies for an
argv are given in turn, the last one repeating; an argv not in the script fails the test with
a KeyError. ``runner.calls`` lists the argvs in order.
"""

from __future__ import annotations

Reply = tuple[int, str, str]
"""(exit code, stdout, stderr), as a ``Runner`` returns them."""


class RecordingRunner:
    """Answers each argv from a script (argv -> replies, the last one repeating) and records
    every argv it was given."""

    def __init__(self, script: dict[tuple[str, ...], list[Reply]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[list[str]] = []

    async def __call__(self, argv: list[str], timeout: float) -> Reply:
        assert timeout > 0
        self.calls.append(argv)
        replies = self.script[tuple(argv)]
        return replies.pop(0) if len(replies) > 1 else replies[0]
