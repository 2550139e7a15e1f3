"""functions/main.py's target, as a framework that calls it (not functions-framework's own
server, which is handed the app's WSGI callable) gets it: the whole WSGI app, its middleware
included. In a subprocess: importing main.py builds the process-wide app from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_CALL_TARGET = """
import importlib.util, json
from flask import Request
from werkzeug.test import EnvironBuilder
spec = importlib.util.spec_from_file_location("function_main", "functions/main.py")
main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main)
for base in ("http://api.example", "https://api.example"):
    response = main.detection_api(Request(EnvironBuilder("/health", base_url=base).get_environ()))
    print(json.dumps([response.status_code, dict(response.headers)]))
"""


def test_the_target_answers_through_the_middleware_with_the_security_headers() -> None:
    env = {
        **os.environ,
        "REDIS_URL": "redis://127.0.0.1:1/0",  # never connected: /health answers without Redis
        "JWT_SECRET_KEY": "placeholder-secret-" + "x" * 24,
    }
    done = subprocess.run(
        [sys.executable, "-c", _CALL_TARGET],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    (plain_status, plain), (tls_status, tls) = map(json.loads, done.stdout.splitlines())
    assert plain_status == tls_status == 200
    for headers in (plain, tls):
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in plain
    assert tls["Strict-Transport-Security"].startswith("max-age=")
