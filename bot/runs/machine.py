"""The pure state machine of runs and steps: states, events and the table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class StepState(StrEnum):
    PENDING = "pending"  # not reached yet
    AWAITING_APPROVAL = "awaiting_approval"  # posted; waits for people (approve / done)
    APPROVED = "approved"  # enough approvals; waits for the worker (or for Done on a manual step)
    RUNNING = "running"  # the worker claimed it; a remote call may be in flight
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # optional step skipped with a reason, or not needed (condition false)
    MARKED_DONE = "marked_done"  # done by other means, confirmed by two approvers
    UNKNOWN = "unknown"  # was running when the bot died; its probe or people decide


class StepEvent(StrEnum):
    POST = "post"  # the step becomes current and is shown
    APPROVE = "approve"  # the last approval it needed arrived
    AUTO_APPROVE = "auto_approve"  # a read-only step needs no approval
    VOID = "void"  # what was approved changed (fingerprint); ask again
    CLAIM = "claim"  # the worker starts it (write-ahead intent recorded first)
    SUCCEED = "succeed"
    FAIL = "fail"
    DONE = "done"  # a person performed a manual / wait / check step
    RETRY = "retry"
    MARK_DONE = "mark_done"
    SKIP = "skip"
    NOT_NEEDED = "not_needed"  # its condition is false (e.g. B4b when the GUIDs matched)
    CRASH = "crash"  # found running at start-up
    PROBE_IN_PLACE = "probe_in_place"  # after a crash, the probe shows the effect is in place


class RunState(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RunEvent(StrEnum):
    COMPLETE = "complete"
    ABORT = "abort"


S = StepState
E = StepEvent

STEP_TRANSITIONS: dict[tuple[StepState, StepEvent], StepState] = {
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

RUN_TRANSITIONS: dict[tuple[RunState, RunEvent], RunState] = {
    (RunState.ACTIVE, RunEvent.COMPLETE): RunState.COMPLETED,
    (RunState.ACTIVE, RunEvent.ABORT): RunState.ABORTED,
}

FINISHED_STEP_STATES = frozenset({S.SUCCEEDED, S.SKIPPED, S.MARKED_DONE})
# States in which a step is the current one of its run (shown with buttons).
OPEN_STEP_STATES = frozenset({S.AWAITING_APPROVAL, S.APPROVED, S.RUNNING, S.FAILED, S.UNKNOWN})


class TransitionError(ValueError):
    """The event is not allowed in the current state."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"cannot {event} a step that is {state.replace('_', ' ')}")


def next_step_state(state: StepState | str, event: StepEvent | str) -> StepState:
    """The state after ``event``; TransitionError when the table does not allow it."""
    try:
        return STEP_TRANSITIONS[(StepState(state), StepEvent(event))]
    except (KeyError, ValueError):
        raise TransitionError(str(state), str(event)) from None


def next_run_state(state: RunState | str, event: RunEvent | str) -> RunState:
    try:
        return RUN_TRANSITIONS[(RunState(state), RunEvent(event))]
    except (KeyError, ValueError):
        raise TransitionError(str(state), str(event)) from None


def is_finished(state: StepState | str) -> bool:
    return StepState(state) in FINISHED_STEP_STATES
