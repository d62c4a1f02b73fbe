"""ServerGuids: the one way the bot masks them, their normal form, the one-time password, and how a run keeps one.

A ServerGuid's first eight characters are the server's one-time password, so a GUID leaves the bot only
masked — by ``mask_guid`` (one value) or ``mask_guids`` (every GUID in a text), both giving
``********-****-****-****-c27d301ad2e5``: lower case, no braces, its last 12 hexadecimal digits.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from actions.errors import RemoteOperationFailed

_GUID_FORM = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# In free text: with or without braces, with dashes or none at all, never part of a longer hexadecimal run.
_GUID_IN_TEXT = re.compile(
    r"(?<![0-9A-Fa-f])\{?"
    r"([0-9a-fA-F]{8})(-?)([0-9a-fA-F]{4})\2([0-9a-fA-F]{4})\2([0-9a-fA-F]{4})\2([0-9a-fA-F]{12})"
    r"\}?(?![0-9A-Fa-f])"
)
MASK_PREFIX = "********-****-****-****-"


def normalise_guid(guid: str | uuid.UUID) -> str:
    """The GUID lowercased with braces and surrounding whitespace removed; ValueError if it is not a GUID."""
    if isinstance(guid, uuid.UUID):
        return str(guid)
    text = guid.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not _GUID_FORM.fullmatch(text):
        raise ValueError("not a GUID (expected 8-4-4-4-12 hexadecimal digits)")
    return text.lower()


def mask_guid(guid: str | uuid.UUID) -> str:
    """The GUID as the bot shows it: ``********-****-****-****-`` and its last 12 digits, lower case.

    Anything that is not a GUID is masked entirely (every letter and digit becomes ``*``).
    """
    try:
        return MASK_PREFIX + normalise_guid(guid)[-12:]
    except ValueError:
        return "".join("*" if char.isalnum() else char for char in str(guid))


def mask_guids(text: str) -> str:
    """``text`` with every GUID in it masked by ``mask_guid``."""
    return _GUID_IN_TEXT.sub(lambda m: mask_guid("-".join(m.group(1, 3, 4, 5, 6))), text)


def otp_from_guid(guid: str | uuid.UUID) -> str:
    """The one-time password for adding a server: the first eight characters of its normalised ServerGuid."""
    return normalise_guid(guid)[:8]


# --------------------------------------------------------------------------- a GUID kept on a run


def guid_fact(host: str) -> str:
    return f"guid:{host}"


def guid_hash(guid: str) -> str:
    return hashlib.sha256(normalise_guid(guid).encode("ascii")).hexdigest()


def guid_at_rest(guid: str) -> dict[str, str]:
    """How a ServerGuid read from a host is kept on the run: masked, and a hash to compare a later reading with.

    The whole GUID is never stored (its first eight characters are the server's one-time password).
    """
    return {"masked": mask_guid(guid), "sha256": guid_hash(guid)}


def check_guid_unchanged(host: str, guid: str, recorded: Any) -> None:
    """A ServerGuid read again must be the one recorded earlier in the run (if one was)."""
    if isinstance(recorded, Mapping) and recorded.get("sha256") and recorded["sha256"] != guid_hash(guid):
        raise RemoteOperationFailed(
            f"{host}'s ServerGuid is now {mask_guid(guid)}, not {recorded.get('masked')} as read "
            "earlier in this run; check the host before going on",
            host=host,
        )
