"""The run service: the only code that changes run state, always by compare-and-set in the database.

``RunService`` is the facade the listeners, the worker and the scheduler call; each responsibility lives
in its own module: reads and snapshots (reads.py), opening runs (opening.py), step and run transitions
(transitions.py), people's votes (votes.py), the thread, message claims and facts (bookkeeping.py),
reveals and refusals (access.py), crash recovery (recovery.py) and reminder notices (notices.py).
"""

from __future__ import annotations

from bot.runs.access import REFUSAL_WINDOW_S, REFUSALS_PER_PERSON, REVEAL_WINDOW_S, REVEALS_PER_PERSON, Access
from bot.runs.bookkeeping import MESSAGE_CLAIM_LEASE_S, POSTING
from bot.runs.notices import Notices
from bot.runs.opening import PREFIX, Opening
from bot.runs.reads import options_of
from bot.runs.recovery import Recovery
from bot.runs.snapshot import WHOLE, RunView, StepView
from bot.runs.votes import ApprovalOutcome, Votes
from bot.store.locks import execution_lock_key

__all__ = [
    "MESSAGE_CLAIM_LEASE_S",
    "POSTING",
    "PREFIX",
    "REFUSALS_PER_PERSON",
    "REFUSAL_WINDOW_S",
    "REVEALS_PER_PERSON",
    "REVEAL_WINDOW_S",
    "WHOLE",
    "ApprovalOutcome",
    "RunService",
    "RunView",
    "StepView",
    "execution_lock_key",
    "options_of",
]


class RunService(Votes, Opening, Access, Recovery, Notices):
    """Opens runs, records approvals and moves steps through the state machine.

    Every state change is ``UPDATE ... WHERE state = :expected``; the loser of a race gets
    StateConflict and changes nothing. Listeners call this; the worker calls ``claim``/``finish``.
    """
