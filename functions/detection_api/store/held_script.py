"""A Lua script called on a connection each thread holds: the ingest write's round trip, without
the connection pool's work around every command.

redis-py's ``Script`` call takes a pooled connection, polls its socket to check it is idle, runs
the command through its retry wrapper and hands the connection back: three system calls more than
the send and receive themselves, one of which releases the GIL (under load, a thread switch), and
about 30 us of Python per call on this machine. Here each thread keeps one connection, taken from
the client's pool once and never handed back, so a call is one send and one receive.

What the pool and the retry wrapper gave is kept:

- a connection that broke while idle (Redis restarted, an idle timeout) is replaced and the call
  made once more on a new one. The scripts this serves are idempotent (ingest's write checks its
  idempotency marker first), so a call that did run before its reply was lost only runs its
  check again;
- ``NOSCRIPT`` (Redis restarted or its script cache was flushed) loads the script and calls again;
- after a fork, the child takes its own connection instead of sharing the parent's socket.

The client's ``socket_timeout`` and ``socket_connect_timeout`` apply as before. A second failure
raises redis-py's ``ConnectionError`` or ``TimeoutError`` (both ``RedisError``), which ingest
answers with its 503.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Any

from hiredis import pack_command
from redis import Redis
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError


class HeldScript:
    """``script(keys, args)`` runs ``source`` with EVALSHA on the calling thread's connection."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._pool = redis.connection_pool
        self._source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._local = threading.local()

    def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        connection = self._connection()
        # hiredis packs it as redis-py would (its serializer is this call, after a per-argument
        # check for bytearray and memoryview, which these scripts are never given: a list of 100
        # detections has about 3,700 arguments)
        command = [pack_command(("EVALSHA", self.sha, len(keys), *keys, *args))]
        try:
            return self._send(connection, command)
        except (RedisConnectionError, RedisTimeoutError):
            connection.disconnect()  # reconnects on the next send
            return self._send(connection, command)

    def _send(self, connection: Connection, command: list[bytes]) -> Any:
        try:
            connection.send_packed_command(command, check_health=False)
            return connection.read_response()
        except NoScriptError:
            connection.send_command("SCRIPT", "LOAD", self._source, check_health=False)
            connection.read_response()
            connection.send_packed_command(command, check_health=False)
            return connection.read_response()

    def _connection(self) -> Connection:
        held: tuple[int, Connection] | None = getattr(self._local, "held", None)
        pid = os.getpid()
        if held is None or held[0] != pid:
            held = (pid, self._pool.get_connection())  # kept: never released to the pool
            self._local.held = held
        return held[1]
