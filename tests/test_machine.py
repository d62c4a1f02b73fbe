"""The state machine's transition table, walked exhaustively."""

from __future__ import annotations

import itertools

import pytest

from bot.runs.machine import (
    RUN_TRANSITIONS,
    STEP_TRANSITIONS,
    RunEvent,
    RunState,
    StepEvent,
    StepState,
    TransitionError,
    next_run_state,
    next_step_state,
)

S, E = StepState, StepEvent

# The intended behaviour, written out independently of the table in machine.py.
ALLOWED = {
    (S.PENDING, E.POST): S.AWAITING_APPROVAL,
    (S.PENDING, E.NOT_NEEDED): S.SKIPPED,
    (S.PENDING, E.SKIP): S.SKIPPED,
    (S.AWAITING_APPROVAL, E.APPROVE): S.APPROVED,
    (S.AWAITING_APPROVAL, E.AUTO_APPROVE): S.APPROVED,
    (S.AWAITING_APPROVAL, E.DONE): S.SUCCEEDED,
    (S.AWAITING_APPROVAL, E.SKIP): S.SKIPPED,
    (S.AWAITING_APPROVAL, E.MARK_DONE): S.MARKED_DONE,
    (S.AWAITING_APPROVAL, E.NOT_NEEDED): S.SKIPPED,
    (S.APPROVED, E.VOID): S.AWAITING_APPROVAL,
    (S.APPROVED, E.CLAIM): S.RUNNING,
    (S.APPROVED, E.DONE): S.SUCCEEDED,
    (S.APPROVED, E.MARK_DONE): S.MARKED_DONE,
    (S.RUNNING, E.SUCCEED): S.SUCCEEDED,
    (S.RUNNING, E.FAIL): S.FAILED,
    (S.RUNNING, E.CRASH): S.UNKNOWN,
    (S.FAILED, E.RETRY): S.APPROVED,
    (S.FAILED, E.MARK_DONE): S.MARKED_DONE,
    (S.FAILED, E.SKIP): S.SKIPPED,
    (S.UNKNOWN, E.PROBE_IN_PLACE): S.SUCCEEDED,
    (S.UNKNOWN, E.RETRY): S.APPROVED,
    (S.UNKNOWN, E.MARK_DONE): S.MARKED_DONE,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(StepState, StepEvent)))
def test_every_step_state_and_event(state: StepState, event: StepEvent) -> None:
    if (state, event) in ALLOWED:
        assert next_step_state(state, event) == ALLOWED[(state, event)]
    else:
        with pytest.raises(TransitionError):
            next_step_state(state, event)


def test_table_is_exactly_the_intended_one() -> None:
    assert STEP_TRANSITIONS == ALLOWED


@pytest.mark.parametrize("state", [S.SUCCEEDED, S.SKIPPED, S.MARKED_DONE])
def test_finished_steps_accept_nothing(state: StepState) -> None:
    for event in StepEvent:
        with pytest.raises(TransitionError):
            next_step_state(state, event)


def test_running_step_cannot_be_retried_or_skipped_or_claimed_again() -> None:
    for event in (E.RETRY, E.SKIP, E.CLAIM, E.MARK_DONE, E.APPROVE):
        with pytest.raises(TransitionError):
            next_step_state(S.RUNNING, event)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(RunState, RunEvent)))
def test_every_run_state_and_event(state: RunState, event: RunEvent) -> None:
    allowed = {
        (RunState.ACTIVE, RunEvent.COMPLETE): RunState.COMPLETED,
        (RunState.ACTIVE, RunEvent.ABORT): RunState.ABORTED,
    }
    assert RUN_TRANSITIONS == allowed
    if (state, event) in allowed:
        assert next_run_state(state, event) == allowed[(state, event)]
    else:
        with pytest.raises(TransitionError):
            next_run_state(state, event)


def test_unknown_names_are_refused() -> None:
    with pytest.raises(TransitionError):
        next_step_state("bogus", "post")
    with pytest.raises(TransitionError):
        next_step_state("pending", "explode")
