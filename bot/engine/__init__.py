"""The run engine: the one front door through which listeners, the CLI and the scheduler change or read runs."""

from __future__ import annotations

from bot.engine.core import Opened, RunEngine

__all__ = ["Opened", "RunEngine"]
