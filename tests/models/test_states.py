"""The job state machine: the moves that exist, and the ones refused."""

from __future__ import annotations

import pytest

from models.states import (
    FINISHED,
    REASONS,
    TRANSITIONS,
    IllegalMove,
    JobStatus,
    StopReason,
    move,
)


def test_every_status_has_its_moves_and_finished_ones_have_none() -> None:
    assert set(TRANSITIONS) == set(JobStatus)
    assert set(REASONS) == set(FINISHED)
    for status in FINISHED:
        assert TRANSITIONS[status] == frozenset()
    assert JobStatus.SUCCEEDED.finished and not JobStatus.RUNNING.finished
    # Every stop reason belongs to some finished status.
    assert set().union(*REASONS.values()) == set(StopReason)


@pytest.mark.parametrize(
    ("frm", "to", "reason"),
    [
        ("queued", "running", None),
        ("running", "queued", None),
        ("running", "succeeded", "early_stopping"),
        ("running", "failed", "nan_loss"),
        ("queued", "cancelled", "cancelled"),
    ],
)
def test_a_legal_move_gives_the_columns(frm: str, to: str, reason: str | None) -> None:
    assert move(frm, to, reason) == {"status": to, "stop_reason": reason}


@pytest.mark.parametrize(
    ("frm", "to", "reason", "message"),
    [
        ("succeeded", "running", None, "a succeeded job cannot become running"),
        ("cancelled", "queued", None, "finished"),
        ("queued", "succeeded", "completed", "cannot become succeeded"),
        ("running", "succeeded", None, "received None"),
        ("running", "succeeded", "cancelled", "stops for one of"),
        ("running", "queued", "error", "has no stop reason"),
    ],
)
def test_an_illegal_move_is_refused_with_what_was_expected(
    frm: str, to: str, reason: str | None, message: str
) -> None:
    with pytest.raises(IllegalMove, match=message):
        move(frm, to, reason)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'paused' is not a valid JobStatus"):
        move("running", "paused")
