"""The whole local stack behind ``detection-api up`` (README "Quick start"), supervised as one unit.

Start order: Redis (appendonly, ``<data>/redis``) -> taky over mutual TLS (certificates made once
in ``<data>/pki``; skipped when ``TAK_URL`` points elsewhere or with ``--no-tak``) -> the forwarder
(``detection-api worker``) -> the function (functions-framework, exactly as the Procfile runs it).
Stop order is the reverse, so the forwarder can still confirm its batch in flight with Redis and
taky up. Every child writes to ``<data>/logs/<name>.log``; a follower thread prints those lines,
prefixed with the child's name, as they come. If any child dies, the stack says which and stops.

Local means local: every service listens on 127.0.0.1 only (the function too), and what the stack
writes (Redis's append-only file, logs, taky's event logs, keys) is its owner's alone: the data
directory is 0700 and the stack runs with umask 077, so its children create 0600 files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from detection_api.auth import Scope, mint_token
from detection_api.local.console import Console, LogFollower
from detection_api.local.pki import ensure_pki
from detection_api.local.ports import LOOPBACK, free_port, has_listener, is_listening
from detection_api.local.probes import http_ok
from detection_api.local.procs import ManagedProcess, ProcessExited
from detection_api.local.redis_server import RedisServer
from detection_api.local.stack_config import StackConfig, StackError
from detection_api.local.taky_server import TakyServer, taky_installed
from detection_api.settings import Settings, environment_names
from detection_api.stop_signal import StopSignal

READY_LINE = "detection-api up: ready"
FUNCTION_TARGET = "detection_api"
_STARTUP_TIMEOUT_S = 60.0
# Grace periods at shutdown: the forwarder confirms its batch in flight before exiting.
_STOP_TIMEOUTS_S = {"function": 10.0, "forwarder": 30.0, "taky": 10.0, "redis": 15.0}


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived while the stack was starting."""


@dataclass
class LocalStack:
    """Starts, watches and stops the children; see the module docstring."""

    config: StackConfig
    console: Console
    redis: RedisServer | None = field(default=None, init=False)
    taky: TakyServer | None = field(default=None, init=False)
    children: dict[str, ManagedProcess] = field(default_factory=dict, init=False)
    follower: LogFollower | None = field(default=None, init=False)
    child_env: dict[str, str] = field(default_factory=dict, init=False)
    token: str | None = field(default=None, init=False)

    # --- starting --------------------------------------------------------------------------------

    def start(self, stop_requested: StopSignal) -> None:
        """Start every service in order and wait for each to be ready (or raise)."""
        config = self.config
        self._preflight()
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        self.follower = LogFollower(self.console)
        self.follower.start()

        def keep_going() -> None:
            if stop_requested.is_set():
                raise StopRequested
            self._raise_if_a_child_died()

        self.follower.follow("redis", config.logs_dir / "redis.log")
        self.redis = RedisServer(config.data_dir / "redis", log_path=config.logs_dir / "redis.log")
        self.redis.start(_STARTUP_TIMEOUT_S)
        self.children["redis"] = self._process(self.redis.process)
        keep_going()

        env = dict(config.environ)
        env |= {"REDIS_URL": self.redis.url, "PORT": str(config.function_port)}
        env["PYTHONUNBUFFERED"] = "1"  # children's logs reach us line by line
        self.token = self._local_auth(env)
        if config.local_tak:
            if not taky_installed():
                self.console.say("detection-api up: installing taky into .venv-taky (first run)")
            pki = ensure_pki(config.data_dir / "pki")
            self.taky = TakyServer(
                config.data_dir / "taky", pki=pki, log_path=config.logs_dir / "taky.log"
            )
            self.follower.follow("taky", self.taky.log_file)
            self.taky.start(_STARTUP_TIMEOUT_S)
            self.children["taky"] = self._process(self.taky.process)
            env |= self.taky.client_env("forwarder")
            keep_going()
        self.child_env = env

        if config.forwarder:
            # A port we picked, so the forwarder's /metrics cannot collide with anything here.
            metrics_port = int(env.get("FORWARDER_METRICS_PORT") or 0) or free_port()
            env["FORWARDER_METRICS_PORT"] = str(metrics_port)
            forwarder = self._launch("forwarder", [*_console_script("detection-api"), "worker"])

            def forwarder_ready() -> bool:
                keep_going()
                return has_listener(metrics_port)

            forwarder.wait_until(forwarder_ready, _STARTUP_TIMEOUT_S, what="its metrics port")

        function = self._launch(
            "function",
            [
                *_console_script("functions-framework"),
                "--source", str(config.function_source),
                "--target", FUNCTION_TARGET,
                "--signature-type", "http",
                "--host", LOOPBACK,
                "--port", str(config.function_port),
            ],
        )  # fmt: skip
        health_url = f"{config.function_url}health"

        def function_ready() -> bool:
            keep_going()
            return http_ok(health_url)

        function.wait_until(function_ready, _STARTUP_TIMEOUT_S, what=f"GET {health_url} = 200")

    def _local_auth(self, env: dict[str, str]) -> str | None:
        """A local JWT key (made once, kept in the data dir, 0600) and a token to try the API with.
        An operator's own JWT_SECRET_KEY, or AUTH_DISABLED=true, is respected."""
        if env.get("AUTH_DISABLED", "").lower() in {"1", "true", "yes"}:
            return None
        if not env.get("JWT_SECRET_KEY") and env.get("JWT_ALGORITHM", "HS256").upper() == "HS256":
            key_file = self.config.data_dir / "jwt-secret"
            if not key_file.is_file():
                key_file.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_urlsafe(48))
            env["JWT_SECRET_KEY"] = key_file.read_text().strip()
        settings = Settings(**{k.lower(): v for k, v in env.items() if k in environment_names()})
        try:
            return mint_token(
                settings,
                subject="local-user",
                scopes=[Scope.WRITE.value, Scope.READ.value],
                ttl_seconds=min(12 * 3600, settings.jwt_max_lifetime_seconds),
            )
        except ValueError as exc:
            self.console.say(f"detection-api up: no sample token ({exc})")
            return None

    def _preflight(self) -> None:
        config = self.config
        if not config.function_source.is_file():
            raise StackError(f"{config.function_source} is missing: this is not a full checkout")
        if is_listening(config.function_port):
            raise StackError(
                f"port {config.function_port} is already in use (another `detection-api up`?). "
                "Stop that, or choose another port: detection-api up --port N (or PORT=N make run)."
            )

    def _launch(self, name: str, argv: list[str]) -> ManagedProcess:
        log_path = self.config.logs_dir / f"{name}.log"
        assert self.follower is not None
        self.follower.follow(name, log_path)
        process = ManagedProcess(
            name, argv, log_path=log_path, env=self.child_env, cwd=self.config.repo
        )
        self.children[name] = process.start()
        return process

    @staticmethod
    def _process(process: ManagedProcess | None) -> ManagedProcess:
        assert process is not None
        return process

    # --- running ---------------------------------------------------------------------------------

    def describe(self) -> Iterator[str]:
        """Where everything listens, and how to try it."""
        config = self.config
        yield "detection-api up: the local stack is running"
        if self.redis is not None:
            yield _row("redis", self.redis.pid, self.redis.url, f"data {config.data_dir / 'redis'}")
        if self.taky is not None:
            yield _row(
                "taky", self.taky.pid, self.taky.url, f"mutual TLS, certs {config.data_dir / 'pki'}"
            )
        elif config.environ.get("TAK_URL"):
            yield f"  {'tak':<10} {'':<11} {config.environ['TAK_URL']}  (from TAK_URL)"
        if "forwarder" in self.children:
            metrics = f"http://{LOOPBACK}:{self.child_env['FORWARDER_METRICS_PORT']}/metrics"
            yield _row("forwarder", self.children["forwarder"].pid, metrics, "detection-api worker")
        else:
            yield "  forwarder  not started (--no-tak and no TAK_URL): detections stay queued"
        yield _row(
            "function",
            self.children["function"].pid,
            config.function_url,
            f"functions-framework --target {FUNCTION_TARGET}",
        )
        yield f"  logs       {config.logs_dir}"
        yield ""
        yield "Try it:"
        yield from _curl_example(config, self.token)
        example = _shown_path(config.example_detection)
        token_arg = f" --token {self.token}" if self.token else ""
        yield f"  detection-api send {example} --url {config.function_url}{token_arg}"
        yield "Ctrl-C (or SIGTERM) stops everything."

    def supervise(self, stop_requested: StopSignal, poll: float = 0.2) -> int:
        """Watch the children until a stop is requested (0) or one of them dies (1)."""
        while not stop_requested.wait(poll):
            try:
                self._raise_if_a_child_died()
            except ProcessExited as exc:
                if self.follower is not None:
                    self.follower.drain()  # its last words first
                self.console.say(
                    f"detection-api up: {exc.name} exited unexpectedly with code "
                    f"{exc.returncode}; stopping the rest"
                )
                return 1
        self.console.say("detection-api up: stop requested")
        return 0

    def _raise_if_a_child_died(self) -> None:
        for name, process in self.children.items():
            code = process.returncode
            if code is not None:
                raise ProcessExited(name, code, process.log_tail(since_start=True))

    # --- stopping --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the children in reverse start order, each within its grace period."""
        for name, process in reversed(list(self.children.items())):
            if process.is_running:
                self.console.say(f"detection-api up: stopping {name} (pid {process.pid})")
            process.stop(_STOP_TIMEOUTS_S.get(name, 10.0))
        if self.follower is not None:
            self.follower.stop()

    def kill(self) -> None:
        """SIGKILL every child now (a second Ctrl-C)."""
        for process in self.children.values():
            process.kill()
        if self.follower is not None:
            self.follower.stop()


def run_stack(
    config: StackConfig,
    console: Console,
    stop_requested: StopSignal,
    on_ready: Callable[[LocalStack], None] | None = None,
) -> int:
    """Start the stack, print where things are and the ready line, supervise, stop; exit code."""
    os.umask(0o077)  # (inherited by every child: the AOF, logs and event logs are owner-only)
    with _exclusive(config.data_dir):
        stack = LocalStack(config, console)
        code = 1
        try:
            code = _start_and_supervise(stack, stop_requested, on_ready)
        except KeyboardInterrupt:  # a second Ctrl-C: no more grace
            code = _kill(stack)
        finally:
            try:
                stack.stop()
            except KeyboardInterrupt:  # the second Ctrl-C came while the children were stopping
                code = _kill(stack)
            console.say("detection-api up: stopped")
        return code


def _start_and_supervise(
    stack: LocalStack,
    stop_requested: StopSignal,
    on_ready: Callable[[LocalStack], None] | None,
) -> int:
    console = stack.console
    try:
        stack.start(stop_requested)
    except StopRequested:
        console.say("detection-api up: stop requested while starting")
        return 0
    except (ProcessExited, TimeoutError, OSError, RuntimeError) as exc:
        console.say(f"detection-api up: could not start the stack: {exc}")
        return 1
    for line in stack.describe():
        console.say(line)
    if on_ready is not None:
        on_ready(stack)
    console.say(READY_LINE)
    return stack.supervise(stop_requested)


def _kill(stack: LocalStack) -> int:
    stack.console.say("detection-api up: killing everything")
    stack.kill()
    return 130


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One stack per data directory: two Redis servers must never share an append-only file."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir.chmod(0o700)  # (also when an older run made it with the default mode)
    with (data_dir / ".up.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another `detection-api up` is using {data_dir}; stop it or use --data-dir"
            ) from None
        yield


def _row(name: str, pid: int, where: str, note: str) -> str:
    return f"  {name:<10} pid {pid:<7} {where}  ({note})"


def _curl_example(config: StackConfig, token: str | None) -> Iterator[str]:
    url = f"{config.function_url}api/v1/detections"
    headers = ["Content-Type: application/json", "Accept: application/json"]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    yield f"  curl -sS -X POST {url} \\"
    for header in headers:
        yield f"    -H {shlex.quote(header)} \\"
    yield f"    --data-binary @{shlex.quote(_shown_path(config.example_detection))}"


def _shown_path(path: Path) -> str:
    """Relative to the working directory when inside it (shorter to paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _console_script(name: str) -> list[str]:
    """A console script of this environment (beside our Python), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(name)
    if found:
        return [found]
    raise StackError(f"{name} not found: run `make venv` (or pip install -e .) first")
