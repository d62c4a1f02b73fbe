"""The audit log's MAC keys, by id: read from environment variables the configuration names, never stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class AuditKeys:
    """The MAC keys by id (from environment variables the configuration names) and the id new events use.

    Mutable so that a store built before the configuration was read (tests, the CLI) can be given them.
    """

    current: str | None = None
    keys: dict[str, bytes] = field(default_factory=dict)

    @property
    def keyed(self) -> bool:
        return self.current is not None and bool(self.keys.get(self.current))

    def use(self, current: str | None, keys: Mapping[str, bytes]) -> None:
        self.current = current
        self.keys = {k: v for k, v in keys.items() if v}
