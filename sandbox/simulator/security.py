"""Authentication and transport security of a simulated host as on a domain network.

- NTLM over HTTP (``WWW-Authenticate: Negotiate``) with pyspnego as the acceptor, reading the users from an
  ``NTLM_USER_FILE`` credential store; the handshake authenticates the TCP connection, not one request.
- WinRM message encryption (MS-WSMV 2.2.9.1, "application/HTTP-SPNEGO-session-encrypted"): each body is a
  two-part ``multipart/encrypted`` message whose second part is a 4-byte little-endian signature length,
  the signature and the sealed SOAP envelope; both directions, as Windows does with AllowUnencrypted=false.
- HTTPS with a certificate issued at start by a test CA (the ``cryptography`` package): the CA certificate
  is written to ``<state>/tls/ca.pem`` for ``ca_trust_path``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import ssl
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import spnego
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
_LENGTH = re.compile(rb"Length=(\d+)")
_USER_FILE_LOCK = threading.Lock()


class EncryptionError(ValueError):
    """An encrypted body that is malformed, tampered with or sealed with another context."""


# --------------------------------------------------------------------------- NTLM


def write_user_file(path: Path, users: dict[str, str]) -> Path:
    """The NTLM_USER_FILE credential store (``:user:password`` lines) pyspnego's acceptor reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f":{user}:{password}" for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def use_user_file(path: Path) -> None:
    """Point pyspnego's NTLM acceptor at ``path`` (it reads the variable during each handshake)."""
    with _USER_FILE_LOCK:
        os.environ["NTLM_USER_FILE"] = str(path)


@dataclass
class NtlmConnection:
    """The NTLM state of one TCP connection: a handshake in progress, then the authenticated context."""

    context: spnego.ContextProxy | None = None
    user: str | None = None

    def step(self, token: bytes) -> bytes | None:
        """Feed the client's token; the challenge to send back, or None once authenticated (ValueError if refused)."""
        if self.context is None or self.context.complete:
            self.context = spnego.server(protocol="ntlm")
            self.user = None
        try:
            reply = self.context.step(token)
        except spnego.exceptions.SpnegoError as exc:
            self.context = None
            raise ValueError(str(exc)) from exc
        if self.context.complete:
            self.user = str(self.context.client_principal or "")
            return None
        return reply

    @property
    def authenticated(self) -> bool:
        return self.context is not None and self.context.complete and bool(self.user)

    def decrypt(self, body: bytes) -> bytes:
        """The SOAP envelope of a ``multipart/encrypted`` body sealed with this connection's context."""
        if not self.authenticated or self.context is None:
            raise EncryptionError("no authenticated security context on this connection")
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        if len(parts) != 2:
            raise EncryptionError("an encrypted message has a header part and a data part")
        header, payload = parts
        length = _LENGTH.search(header)
        if PROTOCOL.encode() not in header or length is None:
            raise EncryptionError("the header part names no SPNEGO session encryption or no Length")
        if not payload.endswith(BOUNDARY + b"--\r\n"):
            raise EncryptionError("the data part is not closed by the final boundary")
        payload = payload[: -len(BOUNDARY + b"--\r\n")]
        prefix = b"\tContent-Type: application/octet-stream\r\n"
        if not payload.startswith(prefix) or len(payload) < len(prefix) + 4:
            raise EncryptionError("the data part is not application/octet-stream")
        sealed = payload[len(prefix) :]
        (signature_length,) = struct.unpack("<i", sealed[:4])
        signature, data = sealed[4 : 4 + signature_length], sealed[4 + signature_length :]
        try:
            message = self.context.unwrap_winrm(signature, data)
        except spnego.exceptions.SpnegoError as exc:
            raise EncryptionError(f"the message does not unseal: {exc}") from exc
        if len(message) != int(length.group(1)):
            raise EncryptionError("the unsealed length differs from the header's Length")
        return message

    def encrypt(self, message: bytes) -> bytes:
        """``message`` sealed for the client, framed as Windows frames it."""
        if self.context is None:
            raise EncryptionError("no security context on this connection")
        wrapped = self.context.wrap_winrm(message)
        return (
            BOUNDARY
            + b"\r\n\tContent-Type: "
            + PROTOCOL.encode()
            + b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(message)).encode()
            + b"\r\n"
            + BOUNDARY
            + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(wrapped.header))
            + wrapped.header
            + wrapped.data
            + BOUNDARY
            + b"--\r\n"
        )


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class SimulatedCA:
    """A certificate authority made for one simulated platform."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    pem_path: Path

    @classmethod
    def load_or_create(cls, directory: Path) -> SimulatedCA:
        """The CA under ``directory`` (ca.pem, ca.key), created on first use so restarts keep the trust."""
        directory.mkdir(parents=True, exist_ok=True)
        pem, key_path = directory / "ca.pem", directory / "ca.key"
        if pem.is_file() and key_path.is_file():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return cls(key, x509.load_pem_x509_certificate(pem.read_bytes()), pem)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "failover-bot simulated platform test CA")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(key, certificate, pem)

    def server_context(self, hostname: str, directory: Path) -> ssl.SSLContext:
        """A TLS server context with a certificate for ``hostname`` (a DNS name or an IP address)."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
        except ValueError:
            alt = x509.DNSName(hostname)
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        safe = re.sub(r"[^A-Za-z0-9.-]", "_", hostname)
        cert_path, key_path = directory / f"{safe}.pem", directory / f"{safe}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert_path, key_path)
        return context
