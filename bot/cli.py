"""The ``failover-bot`` command line: serve | plan | check | simulate | demo | report | readiness."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Config, config_path, db_url, load_config
from bot.errors import ExecutionError, UsageError, UserError
from bot.runs.runbook import Direction, RunOptions

if TYPE_CHECKING:
    from bot.presenter import Presenter
    from bot.runs.service import RunService


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as UsageError (exit 2, one clear line, no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="failover-bot", description="Carries a Redstor Storage Platform failover and failback.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", help="configuration file (default: $FAILOVER_CONFIG or ./failover.yml)")
        return sp

    s = with_config(sub.add_parser("serve", help="run the bot (HTTP, or Socket Mode when SLACK_APP_TOKEN is set)"))
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")

    s = with_config(sub.add_parser("plan", help="print the resolved runbook; changes nothing"))
    s.add_argument("direction", choices=["start", "failback"])
    s.add_argument("site")
    s.add_argument("options", nargs="*", help="scope=all|account|storage  storage=<name,...>  rebuilt")
    s.add_argument("--live", action="store_true", help="read host-derived values read-only over WinRM")

    s = with_config(sub.add_parser("check", help="read-only preflight of a site and its partner"))
    s.add_argument("site")

    s = with_config(sub.add_parser("simulate", help="serve the simulated platform until stopped"))
    s.add_argument("--state", required=True, help="state folder of the simulated hosts")

    s = sub.add_parser("demo", help="a whole failover and failback against the simulated platform")
    s.add_argument("--out", default=None, help="folder for the demo's state and report (default: a temp folder)")
    s.add_argument("--quiet", action="store_true", help="print only the verdict")

    s = sub.add_parser("report", help="the audit report of a run")
    s.add_argument("run_id")
    s.add_argument("--format", choices=["md", "json"], default="md")

    s = with_config(sub.add_parser("readiness", help="the latest readiness results; --now runs a round first"))
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--now", action="store_true", help="run a read-only round now (announces changes in Slack)")
    return p


def _config(args: argparse.Namespace) -> Config:
    return load_config(config_path(getattr(args, "config", None)))


def cmd_plan(args: argparse.Namespace) -> int:
    from bot.runs.runbook import format_plan, parse_options, resolve

    config = _config(args)
    direction: Direction = "failover" if args.direction == "start" else "failback"
    config.site(args.site)
    options = parse_options(direction, args.options)
    if direction == "failback" and not any(o.startswith(("scope=", "storage=")) for o in args.options):
        options = _failback_defaults(config, args.site, options)
    plan = resolve(config, direction, args.site, options)
    live = None
    if args.live:
        from actions.preflight import live_values

        config.check_env(winrm=True)
        live = live_values(config, plan)
    print(format_plan(plan, config, live_values=live))
    return 0


def _failback_defaults(config: Config, site: str, options: RunOptions) -> RunOptions:
    """Failback defaults to the scope of the last completed failover of the site, when the store has one."""
    from bot.runs.service import RunService
    from bot.store.db import Store

    try:
        store = Store(db_url())
    except Exception as exc:  # the state database is optional for plan
        logging.getLogger(__name__).debug("no state database for failback defaults: %s", exc)
        return options
    try:
        previous = RunService(store, config).default_failback_options(site)
    finally:
        store.dispose()
    if previous is None:
        return options
    return RunOptions(scope=previous.scope, storage=previous.storage, rebuilt=options.rebuilt)


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    config.site(args.site)
    config.check_env(winrm=True, odbc=True)
    from actions.preflight import check_site, format_checks

    results = check_site(config, args.site)
    print(format_checks(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from actions.simulated import serve_forever

    config = _config(args)
    config.check_env(winrm=True)
    serve_forever(config, Path(args.state))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    config = _config(args)
    config.check_env(slack=True, winrm=True, odbc=True)
    serve(config, port=args.port, host=args.host)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.sandbox.demo import run_demo

    return run_demo(out=Path(args.out) if args.out else None, quiet=args.quiet)


def cmd_report(args: argparse.Namespace) -> int:
    from bot.report import build_report
    from bot.store.db import Store

    store = Store(db_url())
    try:
        report = build_report(store, args.run_id)
    finally:
        store.dispose()
    print(report.to_json() if args.format == "json" else report.to_markdown(), end="")
    return 0 if report.chain_intact else 1


def cmd_readiness(args: argparse.Namespace) -> int:
    import json

    from bot.readiness.watch import ReadinessWatch, results_text
    from bot.runs.service import RunService
    from bot.store.db import Store

    config = _config(args)
    if args.now:
        config.check_env(winrm=True, odbc=True)
    store = Store(db_url())
    watch: ReadinessWatch | None = None
    try:
        service = RunService(store, config)
        watch = ReadinessWatch(service, _announcer(config, service) if args.now else None)
        report = watch.run_round() if args.now else watch.latest()
    finally:
        if watch is not None:
            watch.close()
        store.dispose()
    if args.format == "json":
        print(json.dumps(report.to_dict() if report else None, indent=2))
    else:
        print(results_text(report))
    return 1 if report is not None and (report.failed or report.problems) else 0


def _announcer(config: Config, service: RunService) -> Presenter | None:
    """A presenter for ``readiness --now`` when Slack credentials are set; without, results are only stored."""
    from bot import config as cfg
    from bot.app import web_client
    from bot.presenter import Presenter

    token = cfg.secret("SLACK_BOT_TOKEN")
    if not token or not config.readiness_channel:
        logging.getLogger(__name__).info("no SLACK_BOT_TOKEN: the round's changes are left for the bot to announce")
        return None
    return Presenter(service, web_client(token, cfg.env("SLACK_API_URL")), post_interval_s=0)


COMMANDS = {
    "plan": cmd_plan,
    "check": cmd_check,
    "simulate": cmd_simulate,
    "serve": cmd_serve,
    "demo": cmd_demo,
    "report": cmd_report,
    "readiness": cmd_readiness,
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as exc:
        print(f"failover-bot: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExecutionError as exc:
        print(f"failover-bot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `failover-bot plan ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
