from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.events import subjects
from tandem.events.names import NAME_PATTERN, InvalidNameError, check_name

valid_names = st.from_regex(NAME_PATTERN, fullmatch=True)


@given(valid_names)
def test_every_name_matching_the_pattern_is_accepted(name: str) -> None:
    assert check_name(name) == name


@given(st.text(max_size=80).filter(lambda s: not NAME_PATTERN.fullmatch(s)))
def test_every_other_text_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        check_name(name)


@pytest.mark.parametrize("bad", ["", "Demo", "-lead", "a.b", "a*", "a>", "x" * 64, "é", "a b"])
def test_refusal_names_the_value(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="cluster name"):
        check_name(bad, "cluster name")


def test_subjects_follow_the_design() -> None:
    assert subjects.event_subject("demo", "RoleChanged") == "tandem.evt.demo.RoleChanged"
    assert subjects.command_subject("demo", "primary", "Hide") == "tandem.cmd.demo.primary.Hide"
    assert subjects.heartbeat_subject("demo", "primary") == "tandem.hb.demo.primary"
    assert subjects.journal_subject("demo") == "tandem.jrnl.demo"
    assert subjects.journal_msg_id("demo", 3, 17) == "demo:3:17"
    assert subjects.events_filter() == "tandem.evt.>"
    assert subjects.events_filter("demo") == "tandem.evt.demo.>"
    assert subjects.events_filter(event_type="ServiceStarted") == "tandem.evt.*.ServiceStarted"
    assert subjects.dlq_subject("TANDEM_EVENTS", "orch-1") == "tandem.dlq.TANDEM_EVENTS.orch-1"


@pytest.mark.parametrize(
    "build",
    [
        lambda: subjects.event_subject("demo", "Role.Changed"),
        lambda: subjects.event_subject("demo", "*"),
        lambda: subjects.event_subject("de.mo", "RoleChanged"),
        lambda: subjects.command_subject("demo", "prim>ary", "Hide"),
        lambda: subjects.dlq_subject("TANDEM_EVENTS", "a b"),
        lambda: subjects.journal_msg_id("demo", -1, 0),
    ],
)
def test_subject_builders_refuse_tokens_that_would_change_the_subject(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        build()
