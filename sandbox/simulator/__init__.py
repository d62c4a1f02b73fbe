"""The simulated Redstor platform: WinRM endpoints over files, services.json, faults.json and SQLite."""

from __future__ import annotations

from sandbox.simulator.oplog import read_operations
from sandbox.simulator.platform import SimulatedPlatform, serve_forever

__all__ = ["SimulatedPlatform", "read_operations", "serve_forever"]
