"""Summarise py-spy profiles (``--format raw``, collapsed stacks) of ``serve``'s processes: where the time goes.

Prints, per file: the samples, the share of the leaf frames by area (database, WinRM/HTTP, Slack, the
bot's own code by module, ...) and the functions with the largest inclusive share (a function counted
once per stack). ``bench/full_run.py --profile DIR`` writes the files.

Usage: ``.venv/bin/python bench/profile_summary.py DIR/*.txt [--top 25]``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
AREAS = (
    ("database (SQLAlchemy, sqlite3, psycopg)", ("sqlalchemy/", "sqlite3/", "psycopg", "alembic/")),
    (
        "WinRM wire (pywinrm, requests, urllib3, http.client, ssl, spnego)",
        (
            "winrm/",
            "requests/",
            "urllib3/",
            "http/client",
            "ssl.py",
            "spnego/",
            "socket.py",
        ),
    ),
    ("XML (lxml, xmltodict, ElementTree)", ("lxml", "xmltodict", "xml/etree")),
    ("Slack client (slack_sdk, slack_bolt)", ("slack_sdk/", "slack_bolt/")),
    ("HTTP server (waitress)", ("waitress/",)),
    ("json", ("json/",)),
    ("logging", ("logging/",)),
    ("threads and queues", ("threading.py", "queue.py", "concurrent/futures")),
)


# Leaf functions that wait (a condition, a socket, a sleep) rather than compute: left out, so the shares are
# of the time threads were busy in Python or C code (a thread blocked on SQLite's lock still counts: it
# sits in the database's frames).
WAITS = {"wait", "select", "sleep", "poll", "_wait_for_tstate_lock", "accept", "readinto", "recv_into", "recv", "get"}
WAITS |= {"_worker", "_read_pipe", "_loop"}  # they block in C (queue.get, readline): their frame is the leaf


def area(path: str) -> str:
    for name, needles in AREAS:
        if any(n in path for n in needles):
            return name
    m = re.search(r"(?:^|/)((?:bot|actions|sandbox)/[^ ]*?)\.py", path)
    if m:
        return m.group(1).replace("/", ".")
    return "other: " + Path(path).name


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = []
        for raw in body.split(";"):
            m = FRAME.match(raw.strip())
            if m:
                frames.append((m.group("func"), m.group("file")))
        stacks.append((frames, int(count)))
    return stacks


def summarise(path: Path, top: int) -> None:
    everything = parse(path)
    stacks = [(frames, n) for frames, n in everything if frames and frames[-1][0].rsplit(".", 1)[-1] not in WAITS]
    waiting = sum(n for _, n in everything) - sum(n for _, n in stacks)
    total = sum(n for _, n in stacks) or 1
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, n in stacks:
        if not frames:
            continue
        leaf[area(frames[-1][1])] += n
        for key in {f"{func} ({area(file)})" for func, file in frames}:
            inclusive[key] += n
    print(f"\n{path.name}: {total} busy samples (100 per second of a thread), {waiting} waiting samples left out")
    print("  leaf frames by area:")
    for name, n in leaf.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print("  functions, inclusive:")
    for name, n in inclusive.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.files:
        summarise(path, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
