"""Fuzz the running function from its own OpenAPI document with schemathesis.

One bounded, deterministic ``schemathesis run`` (the CLI, as an operator would run it) against the
function as the Procfile starts it, with authentication on and a valid token, through all four
phases: the documented examples, coverage (boundary values, missing and wrong parameters,
undocumented methods), generated fuzzing in positive and negative mode, and stateful sequences
along the links schemathesis infers (POST then GET of the record it answered).

Schemathesis' own checks: no 5xx; status codes, content types, headers and bodies as documented;
schema-violating requests refused; no endpoint that ignores authentication; 405 for undocumented
methods. Then, from the HAR record of every exchange, ours: each 4xx is an RFC 9457 problem whose
``status`` matches, no answer carries a stack trace, and nothing was stored for a refused request
(every record in Redis is one that a 2xx answer named).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jwt
import pytest
from product import function_argv

from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SECRET = "schemathesis-run-secret-" + "x" * 16  # made up for this run, never a real key
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
)
# Deliberately not positive_data_acceptance: the schema cannot say everything the validator
# checks (a pixel inside the image, a timestamp not in the future, a ray that reaches the
# ground), so schema-valid data may rightly be refused with 400 or 422.
RECORD_ID = re.compile(r"^[0-9a-f]{32}$")

pytestmark = pytest.mark.skipif(
    not SCHEMATHESIS.is_file(), reason="schemathesis (a test extra) is not installed"
)


def _token() -> str:
    claims = {
        "sub": "schemathesis",
        "scope": "detections:write detections:read",
        "exp": int(time.time()) + 900,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture
def api_url(redis_server, start_process) -> str:
    port = free_port()
    start_process(
        f"function-{port}",
        function_argv(port),
        env={
            "REDIS_URL": redis_server.url,
            "JWT_SECRET_KEY": SECRET,
            "RATE_LIMIT": "100000/second",  # the fuzzer must not be throttled
            "AUTH_FAILURE_RATE_LIMIT": "100000/second",  # (its ignored_auth checks fail on purpose)
        },
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
    )
    return f"http://127.0.0.1:{port}"


def _header(message: dict[str, Any], name: str) -> str:
    return next((h["value"] for h in message["headers"] if h["name"].lower() == name), "")


def _record_ids_answered(entry: dict[str, Any]) -> set[str]:
    """Record ids a 2xx ingest answer names: Location, ce-id, or ids in its JSON body."""
    response = entry["response"]
    ids = {_header(response, "location").rsplit("/", 1)[-1], _header(response, "ce-id")}
    text = response["content"].get("text") or ""
    if "json" in response["content"].get("mimeType", ""):
        body = json.loads(text)
        items = body if isinstance(body, list) else [body]
        for item in items:
            if isinstance(item, dict):
                ids.add(str(item.get("id", "")))
    return {i for i in ids if RECORD_ID.match(i)}


def test_openapi_fuzz_finds_no_server_error_and_no_undocumented_answer(
    api_url, redis_server, tmp_path
):
    har = tmp_path / "schemathesis.har"
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{api_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {_token()}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "25",
        "--generation-deterministic",  # the same cases on every run: no flaky CI
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-failures",
        "25",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--no-color",
    ]
    run = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]

    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) > 500, f"only {len(entries)} requests: the run did not really fuzz"
    statuses = Counter(entry["response"]["status"] for entry in entries)
    assert statuses[201] and statuses[200] and statuses[400], statuses  # all kinds were reached

    wrong = []
    answered: set[str] = set()
    for entry in entries:
        request, response = entry["request"], entry["response"]
        status, text = response["status"], response["content"].get("text") or ""
        where = f"{request['method']} {request['url'][:120]} -> {status}"
        if status >= 500 or "Traceback" in text:
            wrong.append(f"{where}: {text[:200]}")
        elif 400 <= status < 500:
            problem = json.loads(text) if text.startswith("{") else {}
            if (
                _header(response, "content-type") != "application/problem+json"
                or problem.get("status") != status
                or not str(problem.get("type", "")).startswith("urn:detection-api:problem:")
            ):
                wrong.append(f"{where}: not a problem: {text[:200]}")
        elif 200 <= status < 300 and request["method"] == "POST":
            answered |= _record_ids_answered(entry)
    assert not wrong, "\n".join(wrong[:20])

    stored = {
        key.decode().removeprefix("detection:record:")
        for key in redis_server.client().keys("detection:record:*")
    }
    assert stored, "no detection was accepted: the examples phase did not reach ingest"
    assert stored <= answered, f"records no 2xx answer named: {sorted(stored - answered)[:5]}"
