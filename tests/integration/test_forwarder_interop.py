"""TAK_CONFIRM against a real taky: every mode, and pongs that must not count.

taky answers pings (so ``auto`` picks ``pong``) and relays events between clients (so ``readback``
works too); ``none`` must still deliver, ending records ``sent``. Anyone with a client certificate
can publish ``t-x-c-t-r`` events and taky routes them to every client, the forwarder included:
those pongs arrive with no ping of ours outstanding and must confirm nothing, even while the
server is frozen and cannot have processed anything.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tak_subscriber import TakSubscriber, cot_event
from test_forwarder import (
    StartWorker,
    attempts,
    enqueue,
    frozen,
    leftover_claims,
    states,
    wait_connected,
    worker_starter,
)
from test_forwarder_durability import report, wait_all_confirmed

from detection_api.local.procs import ManagedProcess, wait_until
from detection_api.local.redis_server import RedisServer
from detection_api.local.taky_server import TakyServer

UNSOLICITED = "detection_api_tak_stream_anomalies_total{kind=unsolicited_pongs}"


@pytest.fixture
def start_worker(
    start_process: Callable[..., ManagedProcess], redis_server: RedisServer
) -> StartWorker:
    return worker_starter(start_process, redis_server)


@pytest.mark.parametrize(
    ("requested", "used"), [("auto", "pong"), ("pong", "pong"), ("readback", "readback")]
)
def test_each_mode_confirms_every_detection_through_taky(
    requested: str,
    used: str,
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env(), TAK_CONFIRM=requested)
    items = enqueue(redis, 500, prefix=f"mode-{requested}")
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=60)
    wait_all_confirmed(redis, items, 30)
    assert attempts(redis, items) == {0: 500}
    assert worker.metric(f"detection_api_tak_confirm_mode{{mode={used}}}") == 1
    # Counted after the records are written: wait for the counter, never read it once.
    wait_until(lambda: worker.delivered("confirmed") == 500, 10, what="the confirmed counter")
    assert f"TAK confirmation mode: {used} (TAK_CONFIRM={requested})" in worker.log()
    report(tak_subscriber.uid_counts(), items, f"taky TLS, TAK_CONFIRM={requested}")


def test_none_still_delivers_and_ends_records_sent(
    redis_server: RedisServer,
    taky_tcp: TakyServer,
    tak_subscriber_factory: Callable[..., TakSubscriber],
    start_worker: StartWorker,
) -> None:
    subscriber = tak_subscriber_factory(taky_tcp)
    redis = redis_server.client()
    worker = start_worker(taky_tcp.client_env(), TAK_CONFIRM="none")
    items = enqueue(redis, 200, prefix="none")
    subscriber.wait_for_uids([i.uid for i in items], timeout=30)
    wait_until(lambda: states(redis, items) == {"sent": 200}, 20, what="records sent")
    wait_until(lambda: worker.delivered("sent_unconfirmed") == 200, 10, what="the sent counter")
    assert worker.metric("detection_api_tak_confirm_mode{mode=none}") == 1
    assert leftover_claims(redis) == 0


def test_the_presence_event_reaches_other_clients(
    redis_server: RedisServer,
    taky_tcp: TakyServer,
    tak_subscriber_factory: Callable[..., TakSubscriber],
    start_worker: StartWorker,
) -> None:
    subscriber = tak_subscriber_factory(taky_tcp)
    start_worker(taky_tcp.client_env(), TAK_CALLSIGN="Gate 7", TAK_UID="gw-7")
    [presence] = subscriber.wait_for_uids(["gw-7"], timeout=30)
    assert presence.type == "a-f-G-E-S"
    assert b'callsign="Gate 7"' in presence.raw


def test_forged_pongs_from_another_client_never_confirm(
    redis_server: RedisServer,
    taky_tls: TakyServer,
    tak_subscriber: TakSubscriber,
    start_worker: StartWorker,
) -> None:
    redis = redis_server.client()
    worker = start_worker(taky_tls.client_env(), TAK_CONFIRM_TIMEOUT_SECONDS="2")
    wait_connected(worker)
    forged = cot_event("takPong", type="t-x-c-t-r", how="h-g-i-g-o", stale_seconds=20)
    for _ in range(20):  # one TLS record each: taky reads 4 KiB per wake-up, a bigger record
        tak_subscriber.send(forged)  # would leave its tail unread inside taky's TLS object
        tak_subscriber.flush()
    # taky routes them to the forwarder, which reads them while idle: no ping is outstanding.
    worker.process.wait_until(
        lambda: worker.metric(UNSOLICITED) >= 20, 30, what="20 unsolicited pongs counted"
    )
    with frozen(taky_tls):
        items = enqueue(redis, 5, prefix="forged")
        # Written, never processed: the only pongs the forwarder ever saw were forged.
        wait_until(lambda: attempts(redis, items) != {0: 5}, 30, what="the batch to miss its pong")
        assert states(redis, items)["confirmed"] == 0
        assert worker.delivered("confirmed") == 0
    tak_subscriber.wait_for_uids([i.uid for i in items], timeout=60)
    wait_all_confirmed(redis, items, 60)
    assert worker.metric(UNSOLICITED) == 20
    assert worker.delivered("dead") == 0
