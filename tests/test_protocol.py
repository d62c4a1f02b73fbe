"""The operation wire format: which scripts travel inline and which over stdin, and reading them back."""

from __future__ import annotations

import base64

from actions import protocol
from sandbox.simulator.powershell import check_command_line

TYPICAL = {
    "service": "Attix5ProAccountServer",
    "timeout_s": 60,
    "path": r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml",
    "folder": r"C:\ProgramData\Attix5 Pro\AS_Service\TaskQueue",
    "name": "Failover.UpdateSettingsOnSS",
}


# Service changes carry their state handling (pending states, dependents, start type): over stdin.
OVER_STDIN = ("file.replace", "service.stop", "service.start", "service.restart", "host.preflight")


def test_every_small_operation_fits_inline_under_cmd_exe_limit() -> None:
    for op in protocol.OPERATIONS:
        if op in OVER_STDIN:
            assert protocol.command_arguments(protocol.render(op, TYPICAL))[1] is not None, op
            continue
        script = protocol.render(op, TYPICAL)
        arguments, stdin = protocol.command_arguments(script)
        assert stdin is None, op
        line = " ".join([protocol.POWERSHELL, *arguments])
        assert len(line) < 8191, (op, len(line))
        assert protocol.inline_script(" ".join(arguments)) == script
        assert check_command_line(protocol.POWERSHELL, " ".join(arguments)) is None


def test_a_file_sized_payload_goes_over_stdin_behind_the_bootstrap() -> None:
    content = base64.b64encode(b"<Settings>" + b" " * 4000 + b"</Settings>").decode()
    script = protocol.render(
        "file.replace",
        {**TYPICAL, "content_b64": content, "sha256": "0" * 64, "expected_sha256": "1" * 64, "backup_path": "x.bak"},
    )
    arguments, stdin = protocol.command_arguments(script)
    assert arguments == protocol.powershell_arguments()
    assert stdin == script.encode("utf-8")
    assert protocol.inline_script(" ".join(arguments)) is None  # the bootstrap is not an inline script
    assert protocol.parse(stdin.decode())[0] == "file.replace"


def test_anything_else_on_the_command_line_is_refused() -> None:
    assert check_command_line("cmd.exe", "/c dir") is not None
    assert check_command_line(protocol.POWERSHELL, "-Command Get-Process") is not None
    junk = base64.b64encode("Remove-Item C:\\ -Recurse".encode("utf-16-le")).decode()
    # an inline script is accepted as a command line, but it is not an operation: run_script rejects it
    assert protocol.inline_script("-NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand " + junk)
    assert protocol.inline_script("-NoProfile -EncodedCommand " + junk) is None


def test_the_simulated_platform_refuses_an_inline_script_that_is_no_operation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import winrm

    from bot.config import load_config
    from sandbox.simulator import read_operations
    from tests.support.platform import TEST_WINRM_PASSWORD, TEST_WINRM_USER, running_platform, write_config

    config_path = write_config(tmp_path / "cfg")
    with running_platform(config_path, tmp_path / "state"):
        host = load_config(config_path).host("as-b")
        p = winrm.protocol.Protocol(
            endpoint=host.winrm.url,
            transport="basic",
            username=TEST_WINRM_USER,
            password=TEST_WINRM_PASSWORD,
            message_encryption="never",
            proxy=None,
        )
        shell = p.open_shell(codepage=65001, noprofile=True)
        arguments, _ = protocol.command_arguments("Remove-Item -Recurse C:\\")
        cmd = p.run_command(shell, protocol.POWERSHELL, arguments)
        _out, err, code = p.get_command_output(shell, cmd)
        p.cleanup_command(shell, cmd)
        p.close_shell(shell)
    assert code == 1 and b"not an operation" in err
    assert [o["operation"] for o in read_operations(tmp_path / "state")][-1] == "script.rejected"


def test_backups_of_two_edits_within_a_second_do_not_collide() -> None:
    from datetime import UTC, datetime

    from actions.remote import backup_path_for

    first = backup_path_for(r"C:\x\Settings.xml", datetime(2026, 11, 25, 3, 0, 1, 120_000, tzinfo=UTC))
    second = backup_path_for(r"C:\x\Settings.xml", datetime(2026, 11, 25, 3, 0, 1, 870_000, tzinfo=UTC))
    assert first == r"C:\x\Settings.xml.20261125T030001.120Z.bak" and first != second
