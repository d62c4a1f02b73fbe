"""The table of step actions: each runbook ``action`` name, the action that runs it, and the step kinds and
targets a runbook may give it. The runbook loader validates against this table; the worker runs from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from actions.base import Action
from actions.errors import RemoteOperationFailed
from actions.steps.database import PointSlaveRow
from actions.steps.person import PersonAction
from actions.steps.preflight import PREFLIGHT
from actions.steps.services import ServiceAction
from actions.steps.settings import CheckIsSlave, ReadGuid, SetIsSlave
from actions.steps.task_queue import DropTaskFile


@dataclass(frozen=True)
class Registered:
    """One row of the table: the action, the step kinds it may have and the targets it may act on."""

    action: Action
    kinds: frozenset[str]
    targets: frozenset[str]


_ANY_HOST = frozenset({"as_p", "as_s", "ss", "ms"})
_ACCOUNT_SERVERS = frozenset({"as_p", "as_s"})
_HOST = frozenset({"host"})
_PERSON = frozenset({"person"})

REGISTRY: Mapping[str, Registered] = MappingProxyType(
    {
        "preflight": Registered(PREFLIGHT, frozenset({"check"}), frozenset({"sites"})),
        "service.stop": Registered(ServiceAction("stop"), _HOST, _ANY_HOST),
        "service.start": Registered(ServiceAction("start"), _HOST, _ANY_HOST),
        "service.restart": Registered(ServiceAction("restart"), _HOST, _ANY_HOST),
        "settings.set_is_slave": Registered(SetIsSlave(), _HOST, _ACCOUNT_SERVERS),
        "settings.read_guid": Registered(ReadGuid(), _HOST, _ANY_HOST),
        "settings.check_is_slave": Registered(CheckIsSlave(), _HOST, _ACCOUNT_SERVERS),
        "taskqueue.drop": Registered(DropTaskFile(), _HOST, frozenset({"current_master"})),
        "db.point_slave_row": Registered(PointSlaveRow(), frozenset({"sql"}), frozenset({"db"})),
        "manual": Registered(PersonAction(), frozenset({"manual"}), _PERSON),
        "wait": Registered(PersonAction(), frozenset({"wait"}), _PERSON),
        "confirm": Registered(PersonAction(), frozenset({"check"}), _PERSON),
    }
)


def action_for(name: str) -> Action:
    try:
        return REGISTRY[name].action
    except KeyError:
        raise RemoteOperationFailed(f"no action {name!r}") from None


def step_rules() -> Mapping[str, tuple[frozenset[str], frozenset[str]]]:
    """Action name → (the kinds a step with it may have, the targets it may act on), in the table's order."""
    return MappingProxyType({name: (row.kinds, row.targets) for name, row in REGISTRY.items()})
