"""RFC 9457 problem details: every error the function answers, with the failing field paths.

A ``Problem`` is raised anywhere in the request path and turned into an
``application/problem+json`` response by the app's error handler. ``type`` is a stable URI per kind
of problem; its last segment is the ``reason`` label of the rejection metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
# A URN, not a made-up web address: the type identifies the problem kind; it is not a link.
PROBLEM_BASE = "urn:detection-api:problem:"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        errors: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


def field_path(loc: Iterable[str | int], prefix: Iterable[str | int] = ()) -> str:
    """JSON-Pointer-like dotted path: ('sensor_metadata', 'pitch') -> 'sensor_metadata.pitch',
    with list indexes in brackets: (3, 'pixel_x') -> '[3].pixel_x'."""
    out = ""
    for part in (*prefix, *loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def validation_errors(
    pydantic_errors: Iterable[dict[str, Any]], prefix: Iterable[str | int] = ()
) -> list[dict[str, Any]]:
    """Pydantic error dicts -> problem 'errors' members. The rejected input value is left out on
    purpose: it may be huge, or a secret the producer put in the wrong field."""
    prefix = tuple(prefix)
    return [
        {"path": field_path(err.get("loc", ()), prefix), "message": err.get("msg", "invalid")}
        for err in pydantic_errors
    ]


def invalid(detail: str, errors: Sequence[dict[str, Any]] = ()) -> Problem:
    return Problem(400, "validation", "Invalid detection", detail, errors=errors)


def redis_unavailable(retry_after: int = 2) -> Problem:
    return Problem(
        503,
        "redis_unavailable",
        "Queue unavailable",
        "The durable queue cannot be reached; nothing was stored. Retry later.",
        headers={"Retry-After": str(retry_after)},
    )
