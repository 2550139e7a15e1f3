"""A script on a connection each thread holds: one connection per thread, and the recoveries the
pool and retry wrapper gave (broken idle connection, NOSCRIPT, Redis restarted, fork), against a
real Redis."""

from __future__ import annotations

import os
import threading
import time

import pytest
from redis import Redis
from redis.exceptions import RedisError, ResponseError

from detection_api.local.redis_server import RedisServer
from detection_api.store.held_script import HeldScript

# Idempotent, like ingest's write: sets the key once, answers whether it was new.
SET_ONCE = "return redis.call('SET', KEYS[1], ARGV[1], 'NX') and 1 or 0"
FAIL = "return redis.error_reply('refused: ' .. ARGV[1])"
ECHO = "redis.call('SET', KEYS[1], ARGV[1]) return KEYS[1]"  # each reply names its own call


def app_client(redis_server: RedisServer) -> Redis:
    return redis_server.client(socket_connect_timeout=1, socket_timeout=2)


def clients_running_scripts(redis: Redis) -> int:
    return sum(1 for c in redis.client_list() if c["cmd"] == "evalsha")


def test_each_thread_holds_one_connection_for_all_its_calls(redis_server: RedisServer) -> None:
    admin = redis_server.client()
    script = HeldScript(app_client(redis_server), SET_ONCE)

    def calls(prefix: str) -> None:
        for i in range(20):
            assert script([f"{prefix}:{i}"], ["v"]) == 1

    threads = [threading.Thread(target=calls, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls("main")
    assert clients_running_scripts(admin) == 4  # three threads and this one, 80 calls
    assert script(["main:0"], ["v"]) == 0  # the script ran: the key is there


def test_a_connection_broken_while_idle_is_replaced_and_the_call_made(
    redis_server: RedisServer,
) -> None:
    admin = redis_server.client()
    script = HeldScript(app_client(redis_server), SET_ONCE)
    assert script(["a"], ["1"]) == 1
    admin.client_kill_filter(_type="normal", skipme=True)
    assert script(["b"], ["1"]) == 1
    assert admin.get("b") == b"1"


def test_a_flushed_script_cache_is_loaded_again(redis_server: RedisServer) -> None:
    admin = redis_server.client()
    script = HeldScript(app_client(redis_server), SET_ONCE)
    assert script(["a"], ["1"]) == 1
    admin.script_flush()
    assert script(["b"], ["1"]) == 1
    assert admin.script_exists(script.sha) == [True]


def test_redis_restarted_between_calls(redis_server: RedisServer) -> None:
    script = HeldScript(app_client(redis_server), SET_ONCE)
    assert script(["a"], ["1"]) == 1
    redis_server.stop()
    redis_server.start()  # same port and data: a new process without the script or the connection
    assert script(["a"], ["2"]) == 0  # appendonly kept the key; the call ran after NOSCRIPT
    assert script(["b"], ["1"]) == 1


def test_redis_gone_is_a_redis_error_within_the_timeouts(redis_server: RedisServer) -> None:
    script = HeldScript(app_client(redis_server), SET_ONCE)
    assert script(["a"], ["1"]) == 1
    redis_server.stop()
    started = time.monotonic()
    with pytest.raises(RedisError):
        script(["b"], ["1"])
    assert time.monotonic() - started < 3  # refused at once: two connects, no backoff
    redis_server.start()
    assert script(["b"], ["1"]) == 1  # recovers by itself


def test_a_script_error_is_raised_and_the_connection_stays_usable(
    redis_server: RedisServer,
) -> None:
    redis = app_client(redis_server)
    failing, setting = HeldScript(redis, FAIL), HeldScript(redis, SET_ONCE)
    with pytest.raises(ResponseError, match="refused: x"):
        failing([], ["x"])
    assert setting(["a"], ["1"]) == 1
    with pytest.raises(ResponseError, match="refused: y"):
        failing([], ["y"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_takes_its_own_connection(redis_server: RedisServer) -> None:
    admin = redis_server.client()
    script = HeldScript(app_client(redis_server), ECHO)
    assert script(["parent:0"], ["1"]) == b"parent:0"
    child = os.fork()
    if child == 0:  # on a shared socket, either side would read replies meant for the other
        status = 0
        try:
            keys = [f"child:{i}" for i in range(300)]
            status = 0 if [script([k], ["1"]) for k in keys] == [k.encode() for k in keys] else 1
        except BaseException:
            status = 2
        os._exit(status)
    keys = [f"parent:{i}" for i in range(1, 301)]
    results = [script([k], ["1"]) for k in keys]
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert results == [k.encode() for k in keys]
    assert len(admin.keys("child:*")) == 300 and len(admin.keys("parent:*")) == 301
