"""Start the processes a benchmark needs (Redis, the function, a baseline function, the forwarder,
taky) on free loopback ports, and always stop them: ``with Processes(tmp) as procs: ...``."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from types import TracebackType

from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.procs import ManagedProcess
from detection_api.local.redis_server import RedisServer

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FUNCTION_SOURCE = REPO / "functions" / "main.py"
TRIVIAL_SOURCE = REPO / "bench" / "trivial_function.py"
ROUND_TRIP_SOURCE = REPO / "bench" / "round_trip_function.py"
# One gunicorn worker per function, as in a Knative pod; threads as functions-framework defaults.
SERVER_ENV = {"WORKERS": "1", "THREADS": "8", "PYTHONUNBUFFERED": "1"}
JWT_SECRET = secrets.token_urlsafe(32)  # per run; never stored


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (gunicorn master + worker), MiB, as a
    container counts it: the proportional set size (PSS), so pages the forked worker shares with
    its master are counted once, not twice as a sum of RSS would."""
    total_kib = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[ManagedProcess] = []
        self.redis: RedisServer | None = None

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in reversed(self.started):
            process.stop(timeout=10)
        if self.redis is not None:
            self.redis.stop()

    def start_redis(self) -> RedisServer:
        """Redis as the product runs it (every write fsynced to the AOF before the reply), but
        without the background saves it forks for: in a cluster Redis has cores of its own, here
        a fork dumping the dataset would take one of the two the measured processes share."""
        self.redis = RedisServer(
            data_dir=self.tmp / "redis", port=free_port(), save_points=(), aof_rewrites=False
        ).start()
        return self.redis

    def start(
        self, name: str, argv: list[str], env: dict[str, str], ready_url: str, timeout: float = 60
    ) -> ManagedProcess:
        process = ManagedProcess(
            name,
            argv,
            log_path=self.tmp / f"{name}.log",
            env={**os.environ, **env},
            cwd=REPO,
        ).start()
        self.started.append(process)
        process.wait_until(lambda: http_ok(ready_url), timeout=timeout, what=f"{name} ready")
        return process

    @staticmethod
    def function_argv(
        port: int, *, trivial: bool = False, baseline: tuple[Path, str] | None = None
    ) -> list[str]:
        """functions-framework serving the function, the trivial endpoint, or ``baseline``
        (source file, target)."""
        source, target = baseline or (
            (TRIVIAL_SOURCE, "trivial") if trivial else (FUNCTION_SOURCE, "detection_api")
        )
        return [
            str(BIN / "functions-framework"),
            "--source",
            str(source),
            "--target",
            target,
            "--signature-type",
            "http",
            "--port",
            str(port),
        ]

    def start_function(
        self,
        name: str,
        env: dict[str, str],
        *,
        trivial: bool = False,
        baseline: tuple[Path, str] | None = None,
    ) -> int:
        port = free_port()
        plain = trivial or baseline is not None  # answers any path, /health included
        ready = f"http://127.0.0.1:{port}/" if plain else f"http://127.0.0.1:{port}/health"
        argv = self.function_argv(port, trivial=trivial, baseline=baseline)
        self.start(name, argv, {**SERVER_ENV, **env}, ready)
        return port

    def start_function_unready(self, name: str, port: int, env: dict[str, str]) -> ManagedProcess:
        """Spawn without waiting (the caller measures the cold start itself)."""
        process = ManagedProcess(
            f"{name}-{port}",
            self.function_argv(port),
            log_path=self.tmp / f"{name}-{port}.log",
            env={**os.environ, **SERVER_ENV, **env},
            cwd=REPO,
        ).start()
        self.started.append(process)
        return process
