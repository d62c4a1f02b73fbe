"""The post-incident report of a run, built from its audit log alone.

gather (reading the audit log into a Report), model (the Report and what it concludes: decisions, follow-ups,
milestones, the timeline's data, JSON); the Markdown text is bot.render.report, the Slack summary
bot.render.summary, the picture bot.render.timeline.
"""

from __future__ import annotations

from bot.report.gather import build_report
from bot.report.model import NameOf, Override, Report, StepTiming

__all__ = ["NameOf", "Override", "Report", "StepTiming", "build_report"]
