"""Renderers of the run for people: the plan as text, the report as Markdown, its Slack summary and its picture."""

from __future__ import annotations
