"""Fixtures shared by the unit tests (the integration suite has its own in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from detection_api.local.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real Redis server of its own for one test (Redis scripts are tested against Redis)."""
    server = RedisServer(data_dir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    """A client of ``redis_server``."""
    return redis_server.client()
