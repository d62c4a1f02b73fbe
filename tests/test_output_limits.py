"""Remote output is collected up to a limit, and going past it is said, not silently cut (finding 13, output)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions import remote, winrm
from actions.winrm import WinRMExecutor
from bot.config import load_config
from bot.errors import RemoteOperationFailed
from tests.support.platform import running_platform, write_config


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    config_path = write_config(tmp_path / "config", winrm={"command_timeout_s": 20})
    with running_platform(config_path, tmp_path / "state"):
        yield config_path, tmp_path / "state"


def test_output_past_the_limit_fails_the_operation_and_says_so(
    platform: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, state = platform
    config = load_config(config_path)
    path = r"C:\ProgramData\Attix5 Pro\big.log"
    local = state / "as-b" / "C" / "ProgramData" / "Attix5 Pro" / "big.log"
    local.write_bytes(b"x" * 300_000)  # its base64 in the result is ~400 kB
    host = config.host("as-b")
    with WinRMExecutor() as ex:
        assert remote.read_file(ex, host, path).content == local.read_bytes()  # within the default limit
        monkeypatch.setattr(winrm, "MAX_OUTPUT_BYTES", 64 * 1024)
        with pytest.raises(RemoteOperationFailed, match=r"output larger than 65536 bytes; truncated and not read"):
            remote.read_file(ex, host, path)
        monkeypatch.setattr(winrm, "MAX_OUTPUT_BYTES", 16 * 1024 * 1024)
        assert remote.query_service(ex, host, "Attix5ProAccountServer") == "Running"  # the shell still works
