"""Authentication and transport as on a domain network: NTLM with WinRM message encryption, HTTPS with a CA.

The simulated host accepts NTLM (pyspnego as the acceptor), refuses unsealed SOAP over plain HTTP as
Windows does with AllowUnencrypted=false, seals its replies, and serves HTTPS with a certificate from a
test CA made at start, so ``server_cert_validation: validate`` with ``ca_trust_path`` runs for real.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from winrm.exceptions import InvalidCredentialsError, WinRMTransportError
from winrm.protocol import Protocol

from actions import remote, winrm
from actions.hosts import WinRMCredentials
from actions.request_counting import RequestCounter
from actions.winrm import WinRMExecutor
from bot.config import Host
from bot.errors import AuthenticationFailed, HostUnreachable
from sandbox.simulator import SimulatedPlatform, endpoint
from sandbox.simulator.security import SimulatedCA
from tests.support.platform import HTTPS_HOST, NTLM_HOST, running_platform, write_config

SETTINGS_AS = r"C:\ProgramData\Attix5 Pro\AS_Service\Settings.xml"
SETTINGS_SS = r"C:\ProgramData\Attix5 Pro\SS_Service\Settings.xml"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[SimulatedPlatform]:
    state = tmp_path / "state"
    config = write_config(tmp_path / "config", secure_state=state, winrm={"command_timeout_s": 30})
    with running_platform(config, state) as started:
        yield started


def with_winrm(host: Host, **changes: object) -> Host:
    return dataclasses.replace(host, winrm=dataclasses.replace(host.winrm, **changes))


def test_the_configuration_asks_for_ntlm_and_https(platform: SimulatedPlatform) -> None:
    ntlm, https = platform.config.host(NTLM_HOST).winrm, platform.config.host(HTTPS_HOST).winrm
    assert (ntlm.transport, ntlm.url[:5]) == ("ntlm", "http:")
    assert (https.transport, https.url[:6], https.server_cert_validation) == ("ntlm", "https:", "validate")
    assert https.ca_trust_path == str(platform.ca_path)


def test_ntlm_with_message_encryption_end_to_end(platform: SimulatedPlatform) -> None:
    host = platform.config.host(NTLM_HOST)
    counter = RequestCounter()
    with WinRMExecutor(on_request=counter) as ex:
        assert remote.host_info(ex, host).hostname == NTLM_HOST.upper()
        current = remote.read_file(ex, host, SETTINGS_AS)
        new = current.content.replace(b"</Settings>", b"<!-- " + b"sealed " * 30_000 + b"-->\r\n</Settings>")
        assert remote.replace_file(ex, host, SETTINGS_AS, new, current.sha256).changed
        assert remote.read_file(ex, host, SETTINGS_AS).content == new
    # Every WS-Man message was sealed: the request counter cannot see a single action in clear text.
    assert counter.requests > 0 and set(counter.actions) == {"?"}
    assert platform.connections(NTLM_HOST) == 1  # NTLM authenticated the connection once


def test_unsealed_soap_over_http_is_refused_like_allow_unencrypted_false(platform: SimulatedPlatform) -> None:
    proto = Protocol(
        platform.config.host(NTLM_HOST).winrm.url,
        transport="ntlm",
        username=os.environ["FAILOVER_WINRM_USER"],
        password=os.environ["FAILOVER_WINRM_PASSWORD"],
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]
    )
    with pytest.raises(WinRMTransportError) as refused:
        proto.open_shell()
    assert refused.value.code == 400


def test_ntlm_refuses_a_wrong_password_and_basic(platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    host = platform.config.host(NTLM_HOST)
    basic = Protocol(
        host.winrm.url,
        transport="basic",
        username=os.environ["FAILOVER_WINRM_USER"],
        password=os.environ["FAILOVER_WINRM_PASSWORD"],
        message_encryption="never",
        proxy=None,
        ca_trust_path=None,  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidCredentialsError):
        basic.open_shell()
    wrong = WinRMCredentials(host.winrm.credentials.username, "not-the-password")
    with WinRMExecutor() as ex, pytest.raises(AuthenticationFailed):
        remote.host_info(ex, with_winrm(host, credentials=wrong))


def test_https_with_the_test_ca_validates(platform: SimulatedPlatform) -> None:
    host = platform.config.host(HTTPS_HOST)
    with WinRMExecutor() as ex:
        assert remote.host_info(ex, host).hostname == HTTPS_HOST.upper()
        assert remote.read_file(ex, host, SETTINGS_SS).exists


def test_https_refuses_a_certificate_from_another_ca(platform: SimulatedPlatform, tmp_path: Path) -> None:
    other = SimulatedCA.load_or_create(tmp_path / "other-ca")
    host = with_winrm(platform.config.host(HTTPS_HOST), ca_trust_path=str(other.pem_path))
    with WinRMExecutor() as ex, pytest.raises(HostUnreachable, match="TLS failure"):
        remote.host_info(ex, host)


def test_https_refuses_a_certificate_for_another_host_name(platform: SimulatedPlatform) -> None:
    host = platform.config.host(HTTPS_HOST)
    renamed = with_winrm(host, url=host.winrm.url.replace("127.0.0.1", "localhost"))  # the certificate names 127.0.0.1
    with WinRMExecutor() as ex, pytest.raises(HostUnreachable, match="TLS failure"):
        remote.host_info(ex, renamed)


def test_the_ca_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "config", secure_state=state)
    with running_platform(config, state) as first:
        pem = first.ca_path.read_bytes()
    with running_platform(config, state) as second:
        assert second.ca_path.read_bytes() == pem
        with WinRMExecutor() as ex:
            assert remote.host_info(ex, second.config.host(HTTPS_HOST)).hostname == HTTPS_HOST.upper()


def test_a_connection_closed_while_idle_is_authenticated_again(
    platform: SimulatedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP.sys closes idle connections; a message sealed for the old one would be refused (HTTP 400)."""
    monkeypatch.setattr(endpoint._Handler, "timeout", 0.5)  # HTTP.sys' idle timeout, shortened
    host = platform.config.host(NTLM_HOST)
    monkeypatch.setattr(winrm, "IDLE_RESET_S", 3600.0)
    with WinRMExecutor() as ex:
        remote.host_info(ex, host)
        time.sleep(1.0)
        with pytest.raises(HostUnreachable, match="HTTP 400"):
            remote.host_info(ex, host)  # without the idle reset: sealed for a connection that is gone
    monkeypatch.setattr(winrm, "IDLE_RESET_S", 0.2)
    with WinRMExecutor() as ex:
        remote.host_info(ex, host)
        time.sleep(1.0)
        assert remote.host_info(ex, host).hostname == NTLM_HOST.upper()
