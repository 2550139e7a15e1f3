"""The webhook's answers classified, and the URL (it holds a token) kept out of every text. The
client itself is exercised against a real HTTP server in tests/integration/test_notifier.py."""

from __future__ import annotations

import json
import re

from detection_api.alerts.webhook import (
    WebhookClient,
    WebhookOutcome,
    classify_response,
    redact_url,
    scrub,
)

WEBHOOK = "https://discord.example/api/webhooks/123456789012345678/AbCdEf-placeholder_token_0123"
TOKEN = "AbCdEf-placeholder_token_0123"


def test_2xx_is_delivered():
    assert classify_response(204, {}, b"").outcome is WebhookOutcome.DELIVERED
    assert classify_response(200, {}, b'{"id": "1"}').outcome is WebhookOutcome.DELIVERED


def test_429_honours_retry_after_from_the_body_then_the_headers():
    body = {"message": "You are being rate limited.", "retry_after": 2.5, "global": False}
    result = classify_response(429, {"Retry-After": "9"}, json.dumps(body).encode())
    assert (result.outcome, result.retry_after) == (WebhookOutcome.RATE_LIMITED, 2.5)
    assert result.detail == "HTTP 429: You are being rate limited."
    assert classify_response(429, {"Retry-After": "9"}, b"").retry_after == 9.0
    assert classify_response(429, {"X-RateLimit-Reset-After": "1.25"}, b"").retry_after == 1.25
    assert classify_response(429, {"Retry-After": "soon"}, b"").retry_after == 5.0
    assert classify_response(429, {}, b'{"retry_after": true}').retry_after == 5.0
    assert classify_response(429, {}, b'{"retry_after": 1e9}').retry_after == 600
    assert classify_response(429, {}, b'{"retry_after": 1, "global": true}').detail.endswith(
        "(global)"
    )


def test_server_errors_and_timeouts_are_retried_others_rejected():
    assert classify_response(500, {}, b"oops").outcome is WebhookOutcome.RETRY
    assert classify_response(500, {}, b"oops").retry_after is None
    assert classify_response(503, {"Retry-After": "7"}, b"").retry_after == 7.0
    assert classify_response(408, {}, b"").outcome is WebhookOutcome.RETRY
    rejected = classify_response(404, {}, b'{"message": "Unknown Webhook", "code": 10015}')
    assert (rejected.outcome, rejected.detail) == (
        WebhookOutcome.REJECTED,
        "HTTP 404: Unknown Webhook",
    )
    assert classify_response(301, {}, b"").outcome is WebhookOutcome.REJECTED
    assert classify_response(400, {}, b"bad").detail == "HTTP 400: bad"


def test_answers_echoing_the_webhook_url_are_scrubbed():
    result = classify_response(404, {}, f"no webhook at {WEBHOOK}".encode(), WEBHOOK)
    assert TOKEN not in result.detail
    assert "123456789012345678" not in result.detail


def test_redacted_url_keeps_only_scheme_and_host():
    assert redact_url(WEBHOOK) == "https://discord.example/***"
    assert (
        redact_url("http://user:pw@127.0.0.1:8080/api/webhooks/1/tok")
        == "http://127.0.0.1:8080/***"
    )
    assert TOKEN not in repr(WebhookClient(WEBHOOK))


def test_scrub_removes_the_url_its_path_and_its_token_wherever_they_appear():
    text = f"failed {WEBHOOK} token={TOKEN} path=/api/webhooks/123456789012345678/{TOKEN}"
    cleaned = scrub(text, WEBHOOK)
    assert TOKEN not in cleaned
    assert re.search(r"webhooks/\d+", cleaned) is None
    assert scrub("nothing secret", None) == "nothing secret"
    assert scrub("api webhooks https", WEBHOOK) == "api webhooks https"  # short words stay
