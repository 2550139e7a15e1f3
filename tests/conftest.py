"""Fixtures shared by the unit tests (the integration suite has its own in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from detection_api.local.redis_server import RedisServer


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A real Redis server of its own for one test (Redis scripts are tested against Redis)."""
    server = RedisServer(data_dir=tmp_path).start()
    try:
        yield server.client()
    finally:
        server.stop()
