"""Fixtures for the OpenTAKServer interop tests. These run only under ``make interop``
(scripts/interop/run.sh), which starts OpenTAKServer and runs pytest inside the same private
network namespace; anywhere else every test here is skipped with that hint. ``make test`` does not
collect this directory.

Fixtures: ``ots`` (session, ``ots.OtsServer``), ``ots_api`` (session, ``ots.OtsApi``),
``ots_clients`` (connect clients, closed at teardown), and from tests/integration/conftest.py:
``redis_server``, ``redis_server_factory``, ``start_process``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ots import OtsApi, OtsServer, connect_routed
from tak_subscriber import TakSubscriber

_INTEGRATION_CONFTEST = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"


def _load_integration_fixtures() -> object:
    spec = importlib.util.spec_from_file_location("integration_fixtures", _INTEGRATION_CONFTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_integration = _load_integration_fixtures()
# Re-exported: the same Redis and process fixtures (and their safety nets) as the integration tests.
pytest_configure = _integration.pytest_configure  # type: ignore[attr-defined]
pytest_runtest_makereport = _integration.pytest_runtest_makereport  # type: ignore[attr-defined]
redis_server_factory = _integration.redis_server_factory  # type: ignore[attr-defined]
redis_server = _integration.redis_server  # type: ignore[attr-defined]
start_process = _integration.start_process  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OTS_INTEROP") == "1":
        return
    skip = pytest.mark.skip(reason="needs OpenTAKServer: run `make interop` (root)")
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ots() -> OtsServer:
    return OtsServer.from_env()


@pytest.fixture(scope="session")
def ots_api(ots: OtsServer) -> OtsApi:
    return OtsApi(ots)


@pytest.fixture
def ots_clients(
    ots: OtsServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., TakSubscriber]]:
    """``ots_clients(transport, user, routed_via=None)``: a connected client; with
    ``routed_via=<another client>``, one proven to receive what OTS relays (``connect_routed``)."""
    clients: list[TakSubscriber] = []

    def connect(
        transport: str, user: str, routed_via: TakSubscriber | None = None
    ) -> TakSubscriber:
        if routed_via is None:
            client: TakSubscriber = ots.client(transport, user).connect()
        else:
            client = connect_routed(ots, transport, user, prober=routed_via)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()
    if any(
        getattr(getattr(request.node, f"_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    ):
        print(f"\n--- OpenTAKServer logs ---\n{ots.log_tails()}")
