"""What the demo prints and records: its lines, its checks, each run's outcome, and the verdict at the end."""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

WIDTH = min(100, max(60, shutil.get_terminal_size((100, 24)).columns))


@dataclass(frozen=True)
class Check:
    """One line of the verdict: what was checked, whether it held, and what was seen when it did not."""

    group: str
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Demo:
    """What the demo has printed (or, quiet, would have printed) and what it has checked."""

    quiet: bool
    printed: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    secrets: list[tuple[str, str]] = field(default_factory=list)  # (what it is, its value): never to be shown

    def say(self, text: str = "") -> None:
        self.printed.append(text)
        if not self.quiet:
            print(text, flush=True)

    def phase(self, number: int, title: str) -> None:
        self.say()
        heading = f"── {number} · {title} "
        self.say(heading + "─" * max(3, WIDTH - len(heading)))

    def check(self, group: str, what: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(group, what, bool(ok), "" if ok else detail))
        return bool(ok)


@dataclass
class RunOutcome:
    run_id: str
    ops_before: int  # operations.jsonl entries before the run started
    thread: str  # the incident thread as printed


def verdict(demo: Demo, out_dir: Path, elapsed: float) -> int:
    lines = ([] if demo.quiet else [""]) + ["── Verdict " + "─" * (WIDTH - 11)]
    groups: dict[str, list[Check]] = {}
    for c in demo.checks:
        groups.setdefault(c.group, []).append(c)
    for group, checks in groups.items():
        lines.append(f"  {group}")
        for c in checks:
            lines.append(f"    {'✓' if c.ok else '✗'} {c.what}")
            if not c.ok and c.detail:
                lines.extend(textwrap.wrap(c.detail, WIDTH - 8, initial_indent=" " * 8, subsequent_indent=" " * 8))
    failed = [c for c in demo.checks if not c.ok]
    lines.append("")
    if failed:
        lines.append(f"  ✗ {len(failed)} of {len(demo.checks)} checks failed ({elapsed:.1f} s) — exit status 1")
    else:
        lines.append(f"  ✓ all {len(demo.checks)} checks hold ({elapsed:.1f} s) — exit status 0")
    lines.append(f"  Output folder: {out_dir}")
    for line in lines:
        print(line, flush=True)
    return 1 if failed else 0
