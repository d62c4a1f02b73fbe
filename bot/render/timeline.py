"""The run's timeline picture (PNG), drawn with matplotlib's Agg backend in a short-lived process.

``serve`` never imports matplotlib (tens of MB it would keep for its whole life): ``render_png`` starts
``python -m bot.render.timeline``, hands it the timeline as JSON on stdin and reads the PNG from stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

RENDER_TIMEOUT_S = 60.0
KINDS = ("waiting", "working", "executing")
_COLOURS = {"waiting": "#f2c14e", "working": "#5b8def", "executing": "#3aa675"}
_LABELS = {
    "waiting": "waiting for approval",
    "working": "person working (after “I'm on it”)",
    "executing": "bot executing",
}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TimelineError(Exception):
    """The picture could not be drawn."""


def render_png(timeline: dict[str, Any], *, timeout_s: float = RENDER_TIMEOUT_S) -> bytes:
    """The PNG of ``timeline`` (see ``draw``), drawn in a child process that exits afterwards."""
    proc = subprocess.run(
        [sys.executable, "-m", "bot.render.timeline"],
        input=json.dumps(timeline).encode("utf-8"),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.startswith(_PNG_SIGNATURE):
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise TimelineError(f"the timeline renderer exited {proc.returncode}: {tail[0]}")
    return proc.stdout


def draw(timeline: dict[str, Any]) -> bytes:
    """Draw the picture; only ever called in the child process.

    ``timeline``: {"title": str, "steps": [{"id", "title", "segments": [{"kind", "start", "end"}]}],
    "milestones": [{"label", "at"}]}, times in seconds since the run started.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    steps = timeline.get("steps") or []
    height = max(2.5, 0.32 * len(steps) + 1.6)
    fig, ax = plt.subplots(figsize=(11, height), dpi=100)
    for row, step in enumerate(steps):
        for seg in step.get("segments") or []:
            start, end = float(seg["start"]), float(seg["end"])
            width = max(end - start, 0.0)
            ax.broken_barh([(start, width)], (row - 0.35, 0.7), facecolors=_COLOURS.get(seg["kind"], "#999999"))
    ax.set_yticks(range(len(steps)))
    ax.set_yticklabels([f"{s['id']} {str(s.get('title', ''))[:38]}" for s in steps], fontsize=7)
    ax.invert_yaxis()
    end = max([float(t.get("end", 0)) for t in [timeline]] + [1.0])
    for m in timeline.get("milestones") or []:
        at = float(m["at"])
        ax.axvline(at, color="#b03a2e", linestyle="--", linewidth=1)
        ax.text(at, -0.9, f" {m['label']}", color="#b03a2e", fontsize=7, va="bottom", rotation=0)
    ax.set_xlim(0, max(end, *(float(m["at"]) for m in timeline.get("milestones") or [{"at": 0}])) * 1.02 or 1)
    ax.set_xlabel("seconds since the run started")
    ax.set_title(str(timeline.get("title", "")), fontsize=10)
    ax.legend(handles=[Patch(color=_COLOURS[k], label=_LABELS[k]) for k in KINDS], fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()


def main() -> int:
    timeline = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    sys.stdout.buffer.write(draw(timeline))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
