"""How talking to a TAK server fails, in words an operator can act on.

Every failure to reach or talk to the server is a :class:`TakOutage` whose ``kind`` says what went
wrong (wrong CA, rejected client certificate, host name mismatch, refused, reset, a peer sending an
endless event); a live connection that does not answer in time raises :class:`TakConfirmTimeout`.
"""

from __future__ import annotations

import errno
import socket
import ssl
from enum import StrEnum


class OutageKind(StrEnum):
    UNREACHABLE = "unreachable"  # refused, no route, DNS, connect timeout
    CLOSED = "closed"  # the server closed or reset an established connection
    TLS_SERVER_CERT = "tls_server_certificate"  # we rejected the server (wrong CA, expired)
    TLS_HOSTNAME = "tls_hostname_mismatch"  # server certificate is for another name
    TLS_CLIENT_CERT = "tls_client_certificate"  # the server rejected our client certificate
    TLS_CONFIG = "tls_config"  # our own certificate files are missing or unreadable
    TLS_OTHER = "tls_error"  # any other TLS failure
    NO_PONG = "no_pong"  # a fresh connection never answered the ping (input-only port?)
    NO_READBACK = "no_readback"  # TAK_CONFIRM=readback, but the server relayed nothing back
    OVERSIZED_EVENT = "oversized_event"  # the server sent an event larger than we accept


class TakError(Exception):
    """Base of everything the TAK client raises."""


class TakOutage(TakError):
    """The TAK server cannot be reached or talked to. Never the fault of the events in flight."""

    def __init__(self, kind: OutageKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


class TakConfirmTimeout(TakError):
    """A connection that looked alive did not answer the ping in time."""


def outage_from_os_error(exc: OSError, during: str) -> TakOutage:
    if isinstance(exc, ssl.SSLError):
        return _outage_from_tls_error(exc, during)
    if isinstance(exc, ConnectionRefusedError):
        return TakOutage(OutageKind.UNREACHABLE, f"connection refused ({during})")
    if isinstance(exc, ConnectionError):  # reset, aborted, broken pipe
        return TakOutage(OutageKind.CLOSED, f"{exc.strerror or exc} ({during})")
    if isinstance(exc, TimeoutError | socket.gaierror) or exc.errno in {
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }:
        return TakOutage(OutageKind.UNREACHABLE, f"{exc} ({during})")
    return TakOutage(OutageKind.CLOSED, f"{exc} ({during})")


_CLIENT_CERT_REJECTED = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)


def _outage_from_tls_error(exc: ssl.SSLError, during: str) -> TakOutage:
    if isinstance(exc, ssl.SSLCertVerificationError):
        # 62 = X509_V_ERR_HOSTNAME_MISMATCH, 64 = X509_V_ERR_IP_ADDRESS_MISMATCH
        if exc.verify_code in {62, 64}:
            return TakOutage(
                OutageKind.TLS_HOSTNAME,
                f"server certificate does not match the host name: {exc.verify_message} "
                "(set TAK_TLS_SERVER_NAME or fix TAK_URL)",
            )
        return TakOutage(
            OutageKind.TLS_SERVER_CERT,
            f"server certificate rejected: {exc.verify_message} (is TAK_TLS_CA the server's CA?)",
        )
    reason = exc.reason or ""
    if any(marker in reason for marker in _CLIENT_CERT_REJECTED):
        return TakOutage(
            OutageKind.TLS_CLIENT_CERT,
            f"the server rejected our client certificate ({reason}, {during}): "
            "is TAK_TLS_CERT issued by the CA the server trusts?",
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return TakOutage(OutageKind.CLOSED, f"TLS connection closed by the server ({during})")
    return TakOutage(OutageKind.TLS_OTHER, f"{reason or exc} ({during})")


REJECTION_KINDS = frozenset({OutageKind.CLOSED, OutageKind.TLS_CLIENT_CERT})
