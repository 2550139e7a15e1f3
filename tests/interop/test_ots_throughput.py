"""Throughput into OpenTAKServer over TLS: the forwarder (warm, ``TAK_CONFIRM=readback``) as a
ratio of a raw sender into the same server, measured in one run. The numbers are printed
(``make interop`` shows them), never asserted; what is asserted is that the forwarder delivered
and confirmed every detection.

- ours: ``bench.tak_interop.forwarder_rate`` (the same measurement as the README's table for
  taky and FreeTAKServer): N detections enqueued as ingest does, a connected forwarder, the clock
  from the first write until a witness client holds every uid and every record is confirmed.
- raw: a client writing the same N events in whole-event TLS records of at most 4 KiB, timed by
  a witness to the last arrival. OTS loses part of such a burst (it never arrives anywhere, nor in
  its database), so the raw rate counts what arrived and the loss is printed beside it.
"""

from __future__ import annotations

import time
import uuid

from bench.forwarder import detection_cot
from bench.tak_interop import forwarder_rate
from ots import OtsServer, connect_routed

from detection_api.local.redis_server import RedisServer
from detection_api.tak.stream import whole_event_writes
from detection_api.tak.transport import ConfirmMode

EVENTS = 1_000
QUIET_SECONDS = 15.0  # the raw run ends when nothing more has arrived for this long


def raw_goodput(ots: OtsServer, count: int) -> tuple[float, int]:
    """(events/s that reached the witness, events lost) for a raw TLS sender."""
    sender = ots.client("tls", "sender").connect()
    witness = connect_routed(ots, "tls", "subscriber", prober=sender)
    try:
        prefix = f"raw-{uuid.uuid4().hex[:8]}-"
        events = [detection_cot(f"{prefix}{i}").encode() for i in range(count)]
        started = time.perf_counter()
        for data in whole_event_writes(events, 4096):
            sender.send(data)
        arrived, last_change = 0, time.perf_counter()
        while arrived < count and time.perf_counter() - last_change < QUIET_SECONDS:
            now_arrived = sum(1 for uid in witness.uids if uid.startswith(prefix))
            if now_arrived != arrived:
                arrived, last_change = now_arrived, time.perf_counter()
            time.sleep(0.05)
        return arrived / (last_change - started), count - arrived
    finally:
        witness.close()
        sender.close()


def test_forwarder_throughput_against_a_raw_sender_over_tls(
    ots: OtsServer, redis_server: RedisServer
) -> None:
    raw, raw_lost = raw_goodput(ots, EVENTS)
    # forwarder_rate raises unless every record ended confirmed and the witness saw every uid.
    ours = forwarder_rate(
        redis_server.client(), ots.tls_url, ots.as_pki(), ConfirmMode.READBACK, 2, EVENTS
    )
    print(
        f"\nOpenTAKServer 1.7.14 TLS TAK_CONFIRM=readback, {EVENTS} events, warm: "
        f"{ours:,.0f} events/s, 0 lost; raw sender {raw:,.0f} events/s with {raw_lost} of "
        f"{EVENTS} lost; ratio {ours / raw:.2f}"
    )
    assert ours > 0
