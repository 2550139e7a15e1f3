"""Start the product's own processes for integration tests, exactly as the Procfile runs them:
the function (``web``) and the TAK forwarder (``worker``), each ready when its health answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[2]


def function_argv(port: int) -> list[str]:
    """The Procfile's web line."""
    return [
        "functions-framework",
        "--source",
        str(REPO / "functions" / "main.py"),
        "--target",
        "detection_api",
        "--signature-type",
        "http",
        "--port",
        str(port),
    ]


def start_function(
    start_process: Callable[..., ManagedProcess], env: Mapping[str, str], name: str = "function"
) -> str:
    """Start the function; returns its base URL."""
    port = free_port()
    start_process(
        name,
        function_argv(port),
        env=dict(env),
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
        cwd=str(REPO),
    )
    return f"http://127.0.0.1:{port}"


def start_forwarder(
    start_process: Callable[..., ManagedProcess], env: Mapping[str, str], name: str = "forwarder"
) -> tuple[ManagedProcess, int]:
    """Start ``detection-api worker``; returns the process and its metrics/health port."""
    metrics_port = free_port()
    process = start_process(
        name,
        ["detection-api", "worker"],
        env={**env, "FORWARDER_METRICS_PORT": str(metrics_port)},
        ready=lambda: http_ok(f"http://127.0.0.1:{metrics_port}/health"),
    )
    return process, metrics_port
