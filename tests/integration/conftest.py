"""Fixtures for integration tests: real Redis, real taky (TAK server), real child processes.

Everything listens on 127.0.0.1 on free ports and is stopped by PID at teardown, also when a test
fails; an atexit hook, a SIGTERM/SIGHUP handler and PR_SET_PDEATHSIG (see
``detection_api.local.procs``) catch what a finalizer cannot. Every test in this directory is
marked ``integration``.

Fixtures
--------
``pki`` (session)
    ``detection_api.local.pki.PkiPaths``: ``.ca.cert``, ``.server``, ``.wrong_host_server``,
    ``.client("forwarder")`` / ``.client("subscriber")`` (``.cert``, ``.key``, ``.p12``,
    ``.p12_password``), ``.wrong_ca``, ``.wrong_ca_client``; ``.server_name`` is ``"localhost"``.

``redis_server``
    A running ``RedisServer`` (appendonly, fsync always, noeviction) in a tmp dir: ``.url``,
    ``.port``, ``.pid``, ``.client()``, ``.kill()`` (SIGKILL), ``.restart()`` (same port and data
    dir), ``.stop()``. ``redis_server_factory(**kwargs)`` starts more (e.g. ``password="..."``).

``taky_tls`` / ``taky_tcp``
    A running ``TakyServer`` (mutual TLS with ``pki`` / plain TCP): ``.url``
    (``tls://127.0.0.1:P`` / ``tcp://127.0.0.1:P``), ``.port``, ``.pid``, ``.stop()``, ``.start()``
    (again on the same port), ``.restart()``, ``.kill()``, ``.log_file``, ``.cot_log_dir`` (every
    received event, one file per identified client; anonymous clients share
    ``anonymous-127.0.0.1.cot``), and ``.client_env()`` -> the forwarder's env vars (``TAK_URL``,
    ``TAK_TLS_CA``, ``TAK_TLS_CERT``, ``TAK_TLS_KEY``, ``TAK_TLS_SERVER_NAME``; only ``TAK_URL``
    for TCP). ``taky_factory(tls=True, server_cert=pki.wrong_host_server)`` starts
    others (e.g. for hostname-mismatch tests). A fresh taky per test: taky replays events whose
    stale time is in the future to every new connection, so sharing one would leak between tests.
    taky re-serialises what it routes: lat/lon arrive with 6 decimals, hae/ce/le with 1 (compare
    with tolerance; ``<detail>`` is passed through unchanged). After ``.stop()``/``.start()``,
    connected clients are gone: connect new ones with ``tak_subscriber_factory``.

``tak_subscriber``
    A ``TakSubscriber`` connected to ``taky_tls`` with the ``subscriber`` certificate, confirmed
    by a ping/pong before the fixture returns (no event can be missed): ``.events``
    (``ReceivedEvent``: uid, type, how, lat, lon, hae, ce, le, time, stale, raw, arrived_at),
    ``.count``, ``.uids``, ``.duplicates``, ``.uid_counts()``, ``.wait_for_uids(uids, timeout)``,
    ``.wait_for_count(n, timeout)``, ``.ping()``, ``.send(xml)``. For another server:
    ``tak_subscriber_factory(taky_tcp)`` (or ``(server, client="forwarder")``).

``start_process``
    ``start_process(name, argv, env=None, ready=None, timeout=30, cwd=None)`` starts a command
    in its own process group, ``env`` added on top of ``os.environ``, output to
    ``<tmp>/logs/<name>.log``; a bare ``argv[0]`` is looked up beside this Python first
    (``detection-api``, ``functions-framework``). ``ready`` is a no-argument predicate polled until
    true (``detection_api.local.probes.http_ok``, ``detection_api.local.ports.is_listening``).
    Returns the ``ManagedProcess`` (``.pid``, ``.stop()``, ``.kill()``, ``.wait_until(pred,
    timeout)``, ``.log_tail()``). All are stopped at teardown (newest first); a failed test prints
    their log tails.

Example::

    def test_forwarder_delivers(redis_server, taky_tls, tak_subscriber, start_process):
        env = {"REDIS_URL": redis_server.url, **taky_tls.client_env()}
        start_process("worker", ["detection-api", "worker"], env=env)
        ...
        tak_subscriber.wait_for_uids(uids, timeout=30)
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from tak_subscriber import TakSubscriber

from detection_api.local.pki import PkiPaths, generate_pki
from detection_api.local.procs import ManagedProcess, install_signal_safety_net
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer, ensure_taky

_HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    install_signal_safety_net()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Remember each phase's report so fixtures can tell at teardown whether the test failed.
    report = yield
    setattr(item, f"_report_{report.when}", report)
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


# --- certificates ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    return generate_pki(tmp_path_factory.mktemp("pki"))


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    servers: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("data_dir", tmp_path / f"redis-{len(servers)}")
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def redis_server(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_server_factory()


# --- taky --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def taky_executable() -> Path:
    """Installs taky into <repo>/.venv-taky once (first run only; ~10 s)."""
    return ensure_taky()


@pytest.fixture
def taky_factory(
    tmp_path: Path, pki: PkiPaths, taky_executable: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., TakyServer]]:
    servers: list[TakyServer] = []

    def start(tls: bool = True, **kwargs: Any) -> TakyServer:
        kwargs.setdefault("root_dir", tmp_path / f"taky-{len(servers)}")
        server = TakyServer(pki=pki if tls else None, tls=tls, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        if _test_failed(request) and server.process is not None:
            print(f"\n--- taky {server.url} log tail ---\n{server.process.log_tail(40)}")
        server.stop()


@pytest.fixture
def taky_tls(taky_factory: Callable[..., TakyServer]) -> TakyServer:
    return taky_factory(tls=True)


@pytest.fixture
def taky_tcp(taky_factory: Callable[..., TakyServer]) -> TakyServer:
    return taky_factory(tls=False)


@pytest.fixture
def tak_subscriber_factory(pki: PkiPaths) -> Iterator[Callable[..., TakSubscriber]]:
    subscribers: list[TakSubscriber] = []

    def connect(
        server: TakyServer, client: str = "subscriber", timeout: float = 10.0
    ) -> TakSubscriber:
        if server.tls:
            paths = pki.client(client)
            subscriber = TakSubscriber(
                server.url,
                ca=pki.ca.cert,
                cert=paths.cert,
                key=paths.key,
                server_name=pki.server_name,
            )
        else:
            subscriber = TakSubscriber(server.url)
        subscribers.append(subscriber)
        return subscriber.connect(timeout)

    yield connect
    for subscriber in subscribers:
        subscriber.close()


@pytest.fixture
def tak_subscriber(
    taky_tls: TakyServer, tak_subscriber_factory: Callable[..., TakSubscriber]
) -> TakSubscriber:
    return tak_subscriber_factory(taky_tls)


# --- arbitrary processes -----------------------------------------------------------------------


@pytest.fixture
def start_process(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ManagedProcess]]:
    processes: list[ManagedProcess] = []

    def start(
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        ready: Callable[[], bool] | None = None,
        timeout: float = 30.0,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        argv = [_resolve_executable(argv[0]), *argv[1:]]
        process = ManagedProcess(
            name,
            argv,
            log_path=tmp_path / "logs" / f"{name}.log",
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        processes.append(process)
        process.start()
        if ready is not None:
            process.wait_until(ready, timeout, what="readiness")
        return process

    yield start
    for process in reversed(processes):
        process.stop(timeout=10)
    if _test_failed(request):
        for process in processes:
            print(f"\n--- {process.name} (pid {process.pid}) log tail ---\n{process.log_tail(40)}")


def _resolve_executable(command: str) -> str:
    """Console scripts of this virtualenv (detection-api, functions-framework) win over PATH."""
    if os.sep in command:
        return command
    beside_python = Path(sys.executable).parent / command
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(command) or command
