"""Untrusted text made inert for Slack mrkdwn: the one escaping function every builder uses.

Slack reads ``<…>`` in mrkdwn as a mention (``<!channel>``, ``<@U…>``) or a link (``<https://a|label>``),
and ``&`` starts an entity. Any string that came from a person, a host, a file or the database
(an abort reason, a PowerShell error, a value read from Settings.xml) goes through ``escape_mrkdwn``
before it is put into a message, so it shows as typed and pings or links nothing. Slack decodes the
three entities for display, also inside code blocks.
"""

from __future__ import annotations

import re

# The references the bot itself writes into its messages: a user, a channel, a user group, by id.
_REFERENCE = re.compile(r"&lt;(@[UW][A-Z0-9]{2,20}|#C[A-Z0-9]{2,20}|!subteam\^S[A-Z0-9]{2,20})&gt;")


def escape_mrkdwn(text: str, *, keep_references: bool = False) -> str:
    """``text`` with ``&``, ``<`` and ``>`` as entities, so Slack shows it literally.

    ``keep_references`` leaves the bot's own ``<@U…>``, ``<#C…>`` and ``<!subteam^S…>`` working (for
    messages the bot composed around them, e.g. a refusal naming the approvers); ``<!channel>``,
    ``<!here>``, ``<!everyone>`` and every link stay escaped even then.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if keep_references:
        escaped = _REFERENCE.sub(lambda m: f"<{m.group(1)}>", escaped)
    return escaped
