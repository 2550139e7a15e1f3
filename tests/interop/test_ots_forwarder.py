"""The real forwarder (``detection-api worker``) against a real OpenTAKServer 1.7.14.

OTS never answers a ping, so the forwarder must confirm by reading its events back: with
``TAK_CONFIRM=readback``, and with ``auto`` (the default), which must find that out by itself.
Witnesses: a separate subscriber connection (proven routed, see ``ots.connect_routed``) and OTS's
own database (``/api/cot``). Every detection has a fresh uid and the forwarder matches read-backs
by a per-delivery nonce, so events of earlier tests (OTS keeps them) disturb nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from ots import OtsApi, OtsServer
from tak_subscriber import TakSubscriber
from test_forwarder import (  # shared helpers of the forwarder tests
    StartWorker,
    attempts,
    enqueue,
    leftover_claims,
    states,
    worker_starter,
)
from test_forwarder_durability import wait_all_confirmed

from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer


@pytest.fixture
def start_worker(
    start_process: Callable[..., ManagedProcess], redis_server: RedisServer
) -> StartWorker:
    return worker_starter(start_process, redis_server)


@pytest.fixture(params=["tcp", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def witness(transport: str, ots_clients: Callable[..., TakSubscriber]) -> TakSubscriber:
    """A subscriber proven to receive what OTS relays (probed through a second client)."""
    prober = ots_clients(transport, "sender")
    return ots_clients(transport, "subscriber", routed_via=prober)


def stored_uids(ots_api: OtsApi, prefix: str) -> set[str]:
    return {
        uid
        for row in ots_api.stored_cot(type="a-u-G-E-V")
        if (uid := str(row["uid"])).startswith(prefix)
    }


def report(witness: TakSubscriber, redis_attempts: Counter[int], total: int, what: str) -> None:
    counts = witness.uid_counts()
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\n{what}: {total} detections, 0 lost, 0 dead-lettered, {duplicates} duplicates seen "
        f"by a subscriber, attempts per record {dict(sorted(redis_attempts.items()))}"
    )


# OTS relays 20-40 events/s here. The forwarder's defaults must do: in readback mode it keeps at
# most a window (READBACK_WINDOW_BYTES) unconfirmed, so the confirmation timeout applies to a
# window, not a batch, and no 64 KiB read of OTS's ends inside an event over plain TCP.
SLOW_SERVER: dict[str, str] = {}


@pytest.mark.parametrize(
    ("transport", "mode"),
    [
        ("tls", "readback"),
        ("tls", "auto"),
        ("tcp", "auto"),
    ],
    indirect=["transport"],
)
def test_every_detection_is_confirmed_by_read_back(
    mode: str,
    transport: str,
    ots: OtsServer,
    ots_api: OtsApi,
    witness: TakSubscriber,
    redis_server: RedisServer,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(ots.forwarder_env(transport), TAK_CONFIRM=mode, **SLOW_SERVER)
    prefix = f"ots-{transport}-{mode}"
    items = enqueue(redis, 300, prefix=prefix)
    wait_all_confirmed(redis, items, 90)
    witness.wait_for_uids([i.uid for i in items], timeout=30)
    assert worker.delivered("dead") == 0
    assert worker.delivered("confirmed") == 300
    assert leftover_claims(redis) == 0
    # auto must have found out that OTS answers no ping and chosen the read-back.
    assert worker.metric("detection_api_tak_confirm_mode{mode=readback}") == 1
    assert worker.metric("detection_api_tak_confirm_mode{mode=pong}") == 0
    if mode == "auto":
        assert "TAK confirmation mode: readback (TAK_CONFIRM=auto)" in worker.log()
    wait_until(
        lambda: stored_uids(ots_api, prefix) == {i.uid for i in items},
        60,
        what="every detection in OTS's database",
        interval=0.5,
    )
    report(witness, attempts(redis, items), len(items), f"OpenTAKServer {transport} {mode}")


@pytest.mark.timeout(900)
@pytest.mark.parametrize("transport", ["tls"], indirect=True)
def test_2000_detections_with_the_forwarder_killed_mid_run_lose_nothing(
    transport: str,
    ots: OtsServer,
    ots_api: OtsApi,
    witness: TakSubscriber,
    redis_server: RedisServer,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    prefix = "ots-kill"
    items = enqueue(redis, 2000, prefix=prefix)
    env = ots.forwarder_env(transport)
    first = start_worker(env, name="worker-1", TAK_CONFIRM="readback", **SLOW_SERVER)
    witness.wait_for_count(300, timeout=120)
    # Kill while batches are claimed and in flight, not between them.
    wait_until(lambda: leftover_claims(redis) > 0, 30, what="claims in flight", interval=0.001)
    first.process.kill()
    assert states(redis, items)["confirmed"] < len(items)
    second = start_worker(env, name="worker-2", TAK_CONFIRM="readback", **SLOW_SERVER)
    wait_all_confirmed(redis, items, 600)
    witness.wait_for_uids([i.uid for i in items], timeout=60)
    assert leftover_claims(redis) == 0
    assert second.delivered("dead") == 0
    wait_until(
        lambda: stored_uids(ots_api, prefix) == {i.uid for i in items},
        120,
        what="every detection in OTS's database",
        interval=1.0,
    )
    report(witness, attempts(redis, items), len(items), "OpenTAKServer TLS, forwarder SIGKILL")
