"""The post-incident report of a run as data: its steps' timings, overrides, decisions, follow-ups and milestones."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from bot.render import report as render
from bot.render.report import NameOf

# What a recorded fact means, and what it leaves to do afterwards.
_FACTS: dict[str, dict[str, tuple[str, str | None]]] = {
    "dns_redirected": {
        "done_with_dns_redirect": (
            "agents' DNS was redirected to the partner site",
            "revert the DNS redirect at failback",
        ),
        "done": ("agents' DNS was not redirected", None),
    },
    "mirroring": {
        "reenabled": ("mirroring was re-enabled", None),
        "left_disabled": (
            "mirroring was left disabled",
            "mirroring left disabled: re-enable it in the Console once the mirror data is known to be complete",
        ),
    },
}


@dataclass
class Override:
    """A step people pushed past: Mark done (two people) or Skip, with their reasons."""

    step_id: str
    kind: str  # "mark_done" | "skip"
    users: list[str]
    reasons: list[str]
    split_brain: bool = False


@dataclass
class StepTiming:
    """One step of the run as the report tells it."""

    step_id: str
    title: str = ""
    waited_on_people_s: float = 0.0  # waiting for an approval (or for someone to take a Console step)
    person_working_s: float = 0.0  # after "I'm on it", until Done
    executing_s: float = 0.0
    outcome: str = ""
    approved_by: list[str] = field(default_factory=list)
    performed_by: list[str] = field(default_factory=list)
    on_it_by: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    started_at: str | None = None
    ended_at: str | None = None
    result: str = ""
    choice: str | None = None
    reason: str | None = None  # why it was skipped / not needed / marked done
    reminders: int = 0
    escalations: int = 0
    attempts: int = 1
    # (kind, start, end) in seconds since the run started; kind in waiting | working | executing
    segments: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class Report:
    run: dict[str, Any]
    events: list[dict[str, Any]]
    steps: list[StepTiming]
    chain_intact: bool
    chain_problems: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)
    milestones: list[tuple[str, float]] = field(default_factory=list)  # (label, seconds since the start)
    chain_keyed: bool = True  # False: sealed without a key, so a database writer could have re-sealed it
    end_digest: str = ""  # the chain head when the run ended, as posted in its thread: "#seq digest"

    @property
    def waited_on_people_s(self) -> float:
        return sum(s.waited_on_people_s for s in self.steps)

    @property
    def person_working_s(self) -> float:
        return sum(s.person_working_s for s in self.steps)

    @property
    def executing_s(self) -> float:
        return sum(s.executing_s for s in self.steps)

    @property
    def duration_s(self) -> float | None:
        if not self.run["finished_at"]:
            return None
        end = datetime.fromisoformat(self.run["finished_at"])
        return (end - datetime.fromisoformat(self.run["created_at"])).total_seconds()

    @property
    def master_promoted_s(self) -> float | None:
        return next((at for label, at in self.milestones if label == "Master promoted"), None)

    def decisions(self) -> list[str]:
        """The choices recorded during the run, as sentences ("mirroring was left disabled (B34)")."""
        out = []
        for key, value in sorted(self.facts.items()):
            if key.startswith("on_it."):
                continue
            meaning = _FACTS.get(key, {}).get(str(value))
            step = next((s.step_id for s in self.steps if s.choice == value), None)
            where = f" ({step})" if step else ""
            out.append(f"{meaning[0]}{where}" if meaning else f"{key}: {value}{where}")
        return out

    def follow_ups(self) -> list[str]:
        """What is left to do after the run."""
        out = []
        for key, value in sorted(self.facts.items()):
            meaning = _FACTS.get(key, {}).get(str(value))
            if meaning and meaning[1]:
                out.append(meaning[1])
        for s in self.steps:
            if s.outcome == "skipped":
                out.append(f"{s.step_id} was skipped ({s.reason or 'no reason recorded'}): check it was not needed")
            if s.outcome in ("failed", "unknown"):
                out.append(f"{s.step_id} ended {s.outcome}: {s.result or 'see the report'}")
        if self.run["state"] == "aborted":
            current = next((s.step_id for s in reversed(self.steps) if s.outcome not in ("", "not needed")), None)
            out.append(
                "the run was aborted"
                + (f" after {current}" if current else "")
                + ": the platform is part-way; compare it with `failover-bot plan` before going on by hand"
            )
        return out

    def to_json(self) -> str:
        return json.dumps(
            {
                "run": self.run,
                "chain_intact": self.chain_intact,
                "chain_problems": self.chain_problems,
                "chain_keyed": self.chain_keyed,
                "end_digest": self.end_digest,
                "waited_on_people_s": round(self.waited_on_people_s, 3),
                "person_working_s": round(self.person_working_s, 3),
                "executing_s": round(self.executing_s, 3),
                "duration_s": self.duration_s,
                "master_promoted_s": self.master_promoted_s,
                "facts": self.facts,
                "decisions": self.decisions(),
                "follow_ups": self.follow_ups(),
                "overrides": [asdict(o) for o in self.overrides],
                "milestones": [{"label": label, "at_s": at} for label, at in self.milestones],
                "steps": [asdict(s) for s in self.steps],
                "events": self.events,
            },
            indent=2,
            default=str,
        )

    def timeline(self) -> dict[str, Any]:
        """What the timeline picture shows (bot.render.timeline draws it)."""
        ends = [end for s in self.steps for _, _, end in s.segments] + [at for _, at in self.milestones]
        if self.duration_s is not None:
            ends.append(self.duration_s)
        r = self.run
        return {
            "title": f"{r['id']}: {r['direction']} of {r['site']} — {r['state']}",
            "end": max(ends, default=1.0),
            "steps": [
                {
                    "id": s.step_id,
                    "title": s.title,
                    "segments": [{"kind": k, "start": a, "end": b} for k, a, b in s.segments],
                }
                for s in self.steps
            ],
            "milestones": [{"label": label, "at": at} for label, at in self.milestones],
        }

    def to_markdown(self, name_of: NameOf = str) -> str:
        """The full report in Markdown (bot.render.report); ``name_of`` turns Slack user IDs into names."""
        return render.markdown(self, name_of)
