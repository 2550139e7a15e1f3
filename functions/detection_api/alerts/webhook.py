"""The Discord webhook client: one POST, its answer classified. The URL's path holds a token: never
logged or in a repr, scrubbed from any text; redirects (which could carry it away) are refused."""

from __future__ import annotations

import http.client
import json
import math
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "detection-api-notifier/1.0"  # a default agent may be refused by Cloudflare


def redact_url(url: str) -> str:
    """The URL fit for logs: scheme and host only."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/***"


def scrub(text: str, url: str | None) -> str:
    """``text`` without the URL, its path, password or a long path segment (Discord's token)."""
    if not url:
        return text
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if len(s) >= 16]  # Discord's token
    for secret in sorted({url, parts.path, parts.password or "", *segments}, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class WebhookOutcome(StrEnum):
    DELIVERED = "delivered"
    RATE_LIMITED = "rate_limited"  # 429: wait retry_after, keep the jobs
    RETRY = "retry"  # 5xx, 408, no answer: back off, keep the jobs
    REJECTED = "rejected"  # any other status: the jobs fail with this reason


@dataclass(frozen=True, slots=True)
class WebhookResult:
    outcome: WebhookOutcome
    status: int | None  # None: no answer
    detail: str  # scrubbed, for logs and failure reasons
    retry_after: float | None = None  # seconds the server asked us to wait


def _seconds(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    ok = math.isfinite(number) and number >= 0 and not isinstance(value, bool)
    return number if ok else None


def classify_response(
    status: int, headers: Mapping[str, str], body: bytes, url: str | None = None
) -> WebhookResult:
    """What a webhook answer means for the jobs of the message (pure; waits capped at 10 min)."""
    if 200 <= status < 300:
        return WebhookResult(WebhookOutcome.DELIVERED, status, f"HTTP {status}")
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    text = data["message"] if isinstance(data.get("message"), str) else text
    detail = scrub(f"HTTP {status}" + (f": {text[:200]}" if text else ""), url)
    waits = [headers.get("Retry-After"), headers.get("X-RateLimit-Reset-After")]
    if status == 429:  # Discord's JSON retry_after first; "global" means the whole bot/IP
        waits.insert(0, data.get("retry_after"))
        detail += " (global)" if data.get("global") is True else ""
    wait = next((min(s, 600.0) for s in map(_seconds, waits) if s is not None), None)
    if status == 429:
        wait = 5.0 if wait is None else wait
        return WebhookResult(WebhookOutcome.RATE_LIMITED, status, detail, wait)
    if status >= 500 or status == 408:
        return WebhookResult(WebhookOutcome.RETRY, status, detail, wait)
    return WebhookResult(WebhookOutcome.REJECTED, status, detail)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


class WebhookClient:
    """POSTs JSON (urllib: no dependency, no debug log quoting the URL); every failure is a
    :class:`WebhookResult`, never an exception."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._url, self.timeout, self.redacted = url, timeout, redact_url(url)
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"WebhookClient({self.redacted})"

    def post(self, body: Mapping[str, Any]) -> WebhookResult:
        request = urllib.request.Request(  # noqa: S310 (http(s): checked by Settings)
            self._url,
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )
        try:
            try:
                response = self._opener.open(request, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                response = exc  # a 3xx, 4xx or 5xx answer: read like any other
            with response:
                status, headers, answer = response.status, response.headers, response.read(4096)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # refused, timeout, reset
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            detail = scrub(f"no answer: {type(reason).__name__}: {reason}", self._url)[:300]
            return WebhookResult(WebhookOutcome.RETRY, None, detail)
        return classify_response(status, headers, answer, self._url)
