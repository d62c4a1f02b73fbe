"""The ``failover-bot`` command line: serve | plan | check | simulate | demo | report | readiness."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import Config, config_path, load_config
from bot.errors import ExecutionError, UsageError, UserError

if TYPE_CHECKING:
    from bot.presenter import Presenter
    from bot.runs.service import RunService


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as UsageError (exit 2, one clear line, no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# What ``--help`` of each command shows below its options: an example and the environment it reads.
_CONFIG_ENV = "  FAILOVER_CONFIG          configuration file when --config is not given (default ./failover.yml)"
_DB_ENV = "  FAILOVER_DB_URL          the bot's database (default sqlite:///failover-bot.db; or postgresql://...)"
_WINRM_ENV = (
    "  FAILOVER_WINRM_USER, FAILOVER_WINRM_PASSWORD\n"
    "                           WinRM credentials (the names winrm.username_env/password_env give)"
)
_ODBC_ENV = "  FAILOVER_ODBC_<SITE>     ODBC connection string of each site's StoragePlatform database (odbc_env)"
_SLACK_ENV = (
    "  SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET   the Slack app's secrets (HTTP mode)\n"
    "  SLACK_APP_TOKEN          xapp-... token: Socket Mode instead of HTTP\n"
    "  SLACK_API_URL            another Slack Web API base URL (rehearsals)"
)


def _epilog(example: str, *env: str) -> str:
    text = "example:\n  " + example
    text += "\n\nenvironment:\n" + "\n".join(env) if env else "\n\nenvironment: none"
    return text


_HELP: dict[str, tuple[str, str]] = {
    "serve": (
        "run the bot (HTTP, or Socket Mode when SLACK_APP_TOKEN is set)",
        _epilog(
            "failover-bot serve --config /etc/failover-bot/failover.yml --port 3000",
            _CONFIG_ENV,
            _DB_ENV,
            _SLACK_ENV,
            _WINRM_ENV,
            _ODBC_ENV,
        ),
    ),
    "plan": (
        "print the resolved runbook; changes nothing",
        _epilog(
            "failover-bot plan start site-a --short",
            _CONFIG_ENV,
            _DB_ENV + "\n                           (read only, for a failback's default scope)",
            _WINRM_ENV + " (with --live)",
        ),
    ),
    "check": (
        "read-only preflight of a site and its partner",
        _epilog("failover-bot check site-a", _CONFIG_ENV, _WINRM_ENV, _ODBC_ENV),
    ),
    "simulate": (
        "serve the simulated platform until stopped",
        _epilog(
            "FAILOVER_WINRM_USER=u FAILOVER_WINRM_PASSWORD=p failover-bot simulate --state /tmp/sim",
            _CONFIG_ENV,
            _WINRM_ENV,
        ),
    ),
    "demo": (
        "a whole failover and failback against the simulated platform",
        _epilog("failover-bot demo --out /tmp/demo"),
    ),
    "readiness": (
        "the latest readiness results; --now runs a round first",
        _epilog(
            "failover-bot readiness --now",
            _CONFIG_ENV,
            _DB_ENV,
            _WINRM_ENV + " (with --now)",
            _ODBC_ENV + " (with --now)",
            "  SLACK_BOT_TOKEN          with --now: announce the round's changes in Slack (else only stored)",
        ),
    ),
    "report": (
        "the audit report of a run (opens the database read-only)",
        _epilog(
            "FAILOVER_DB_URL=sqlite:////var/lib/failover-bot/failover-bot.db failover-bot report FO-1",
            _DB_ENV,
            "  SLACK_BOT_TOKEN          when set: people are named through Slack (users.info), else by ID",
            "  SLACK_API_URL            another Slack Web API base URL (rehearsals)",
            "  the audit key variables  those the configuration names (audit.keys), to check the chain's seals",
        ),
    ),
}


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="failover-bot", description="Carries a Redstor Storage Platform failover and failback.")
    verbose = _Parser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log INFO lines on stderr too"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO lines on stderr too")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, *, config: bool = True) -> argparse.ArgumentParser:
        summary, epilog = _HELP[name]
        sp = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=epilog,
            parents=[verbose],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if config:
            sp.add_argument("--config", help="configuration file (default: $FAILOVER_CONFIG or ./failover.yml)")
        return sp

    s = command("serve")
    s.add_argument("--port", type=int, default=3000)
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    s.add_argument(
        "--role",
        choices=["all", "web", "worker"],
        default="all",
        help="all (default): answer Slack here and execute in a worker process this one supervises; "
        "web or worker: one of the two, for deployments that run them apart on one database",
    )
    s.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by serve for its worker
    s.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)

    s = command("plan")
    s.add_argument("direction", choices=["start", "failback"])
    s.add_argument("site")
    s.add_argument("options", nargs="*", help="scope=all|account|storage  storage=<name,...>  rebuilt")
    s.add_argument("--live", action="store_true", help="read host-derived values read-only over WinRM")
    s.add_argument("--short", action="store_true", help="one line per step: id, title, where, risk, who acts")

    command("check").add_argument("site")

    command("simulate").add_argument("--state", required=True, help="state folder of the simulated hosts")

    s = command("demo", config=False)
    s.add_argument("--out", default=None, help="folder for the demo's state and report (default: a temp folder)")
    s.add_argument("--quiet", action="store_true", help="print only the verdict")

    s = command("report")  # the configuration names the audit keys that check the chain's seals
    s.add_argument("run_id")
    s.add_argument("--format", choices=["md", "json"], default="md")

    s = command("readiness")
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.add_argument("--now", action="store_true", help="run a read-only round now (announces changes in Slack)")
    return p


def _config(args: argparse.Namespace) -> Config:
    return load_config(config_path(getattr(args, "config", None)))


def cmd_plan(args: argparse.Namespace) -> int:
    from bot.engine.offline import failover_history
    from bot.render.plan import format_plan, format_plan_short
    from bot.runs.runbook import direction_of, plan_for_command

    config = _config(args)
    plan = plan_for_command(config, direction_of(args.direction), args.site, args.options, failover_history(config))
    live = None
    if args.live:
        from actions.preflight import live_values

        config.check_env(winrm=True)
        live = live_values(config, plan)
    if args.short:
        print(format_plan_short(plan, config), end="")
    else:
        print(format_plan(plan, config, live_values=live))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = _config(args)
    config.site(args.site)
    config.check_env(winrm=True, odbc=True)
    from actions.preflight import format_checks
    from bot.engine.offline import preflight

    results = preflight(config, args.site)
    print(format_checks(results))
    return 0 if all(r.ok and not r.skipped for r in results) else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    from sandbox.simulator import serve_forever

    config = _config(args)
    config.check_env(winrm=True)
    serve_forever(config, Path(args.state))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    config = _config(args)
    config.check_env(slack=True, winrm=True, odbc=True)
    serve(config, port=args.port, host=args.host, role=args.role, parent_pid=args.parent_pid, ready_fd=args.ready_fd)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sandbox.demo import run_demo

    return run_demo(out=Path(args.out) if args.out else None, quiet=args.quiet)


def cmd_report(args: argparse.Namespace) -> int:
    from bot.engine.offline import report as read_report

    # A report reads; it never migrates, writes or creates a file. The audit keys the configuration names
    # (when there is one) check the chain's seals.
    with_keys = args.config or Path(config_path(args.config)).exists()
    report = read_report(args.run_id, (lambda: _config(args).audit_keys()) if with_keys else None)
    print(report.to_json() if args.format == "json" else report.to_markdown(_people_names()), end="")
    return 0 if report.chain_intact else 1


def cmd_readiness(args: argparse.Namespace) -> int:
    import json

    from bot.engine.offline import readiness
    from bot.readiness.messages import results_text

    config = _config(args)
    if args.now:
        config.check_env(winrm=True, odbc=True)
    report = readiness(config, now=args.now, announcer=lambda service: _announcer(config, service))
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


def _people_names() -> Callable[[str], str]:
    """People by name through Slack's users.info when SLACK_BOT_TOKEN is set; their IDs otherwise."""
    from bot import config as cfg

    token = cfg.secret("SLACK_BOT_TOKEN")
    if not token:
        return str
    from bot.app import web_client
    from bot.reporting import PeopleNames

    return PeopleNames(web_client(token, cfg.env("SLACK_API_URL")))


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
    try:
        args = _parser().parse_args(argv)
        # serve and simulate are services: their INFO lines are their log. The other commands print their
        # answer; their stderr shows warnings and errors only, unless -v asks for more.
        loud = args.command in ("serve", "simulate") or getattr(args, "verbose", False)
        logging.basicConfig(
            level=logging.INFO if loud else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
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
