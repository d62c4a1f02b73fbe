"""``failover-bot demo``: three simulated people carry the example platform through a failover and failback, checked.

- ``story``: the scripted scenario (``run_demo``) and its phases;
- ``startup``: ports, output folder, environment, log file and the secured copy of the example config;
- ``checks`` and ``facts``: what is checked after each run, read from the platform, Slack and the audit;
- ``reports``: the audit reports written out, and the search for anything secret;
- ``printing``: the lines, the checks and the verdict; ``cast``: the people, the channel, the site.
"""

from __future__ import annotations

from sandbox.demo.cast import CHANNEL, EXAMPLE_CONFIG
from sandbox.demo.facts import expected_failback_ops, expected_failover_ops
from sandbox.demo.printing import Check, Demo, verdict
from sandbox.demo.startup import PortBusy, check_ports
from sandbox.demo.story import run_demo

__all__ = [
    "CHANNEL",
    "EXAMPLE_CONFIG",
    "Check",
    "Demo",
    "PortBusy",
    "check_ports",
    "expected_failback_ops",
    "expected_failover_ops",
    "run_demo",
    "verdict",
]
