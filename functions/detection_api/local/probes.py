"""Readiness probes for local services (used with ``procs.wait_until`` and its deadlines)."""

from __future__ import annotations

import http.client
import urllib.parse


def http_ok(url: str, timeout: float = 1.0, status: int = 200) -> bool:
    """True if a GET of ``url`` (plain http, e.g. a loopback /health) answers ``status``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"http_ok needs an http:// URL, got {url!r}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        return connection.getresponse().status == status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
