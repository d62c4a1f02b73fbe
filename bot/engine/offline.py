"""The engine for the command line: what `failover-bot plan|check|report|readiness` read, without Slack or a worker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from bot.config import Config, db_url
from bot.errors import UsageError
from bot.runs.runbook import FailoverHistory, HistoryUnavailable, PastFailover
from bot.runs.service import RunService
from bot.store.db import MissingDatabase, Store, shown_url

if TYPE_CHECKING:
    from actions.preflight import CheckResult
    from bot.readiness.messages import RoundReport
    from bot.readiness.watch import Poster
    from bot.report import Report

log = logging.getLogger(__name__)


def preflight(config: Config, site: str, executor: Any = None) -> list[CheckResult]:
    """The read-only preflight of ``site`` and its partner (``executor``: whose WinRM connections to use)."""
    from actions.preflight import check_site

    return check_site(config, site, executor=executor)


def failover_history(config: Config) -> FailoverHistory:
    """Earlier failovers of a site for a failback's defaults, read from the state database when there is one
    (read-only: plan writes nothing and creates no database file)."""

    def history(site: str) -> list[PastFailover]:
        try:
            store = Store(db_url(), read_only=True)
        except MissingDatabase as exc:  # the state database is optional for plan
            log.info("%s: failback defaults to scope=all", exc)
            raise HistoryUnavailable("no state database of the bot yet") from None
        try:
            return RunService(store, config).failovers_of(site)
        except SQLAlchemyError as exc:  # unreachable, or not a failover-bot database yet
            log.warning("cannot read %s for failback defaults: %s", shown_url(store.url), exc)
            raise HistoryUnavailable("the bot's state database could not be read") from None
        finally:
            store.dispose()

    return history


def report(run_id: str, audit_keys: Callable[[], Sequence[Any]] | None) -> Report:
    """The audit report of ``run_id``, read from FAILOVER_DB_URL opened read-only (never migrated or created)."""
    from bot.report import build_report

    url = db_url()
    try:
        store = Store(url, read_only=True)
    except MissingDatabase as exc:
        raise UsageError(f"{exc} (FAILOVER_DB_URL); nothing created") from None
    try:
        if audit_keys is not None:  # the configuration's audit keys check the chain's seals
            store.audit_keys.use(*audit_keys())
        return build_report(store, run_id)
    except UsageError as exc:
        raise UsageError(f"{exc} in {shown_url(url)} (FAILOVER_DB_URL)") from None
    except SQLAlchemyError as exc:
        problem = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise UsageError(f"cannot read the bot's database at {shown_url(url)}: {problem}") from None
    finally:
        store.dispose()


def readiness(config: Config, *, now: bool, announcer: Callable[[RunService], Poster | None]) -> RoundReport | None:
    """The latest readiness results, or (``now``) a round run now whose changes ``announcer`` posts."""
    from bot.readiness.watch import ReadinessWatch

    store = Store(db_url())
    watch: ReadinessWatch | None = None
    try:
        service = RunService(store, config)
        watch = ReadinessWatch(service, announcer(service) if now else None)
        return watch.run_round() if now else watch.latest()
    finally:
        if watch is not None:
            watch.close()
        store.dispose()
