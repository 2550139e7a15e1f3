"""OpenTAKServer relays a raw client's events to another client and stores them: the read-back
path that confirms the forwarder's deliveries to it (OTS never answers a ping), over TCP and TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ots import OtsApi
from tak_subscriber import TakSubscriber, cot_event

from detection_api.local.procs import wait_until


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_raw_events_are_relayed_to_a_second_connection_and_stored(
    transport: str, ots_api: OtsApi, ots_clients: Callable[..., TakSubscriber]
) -> None:
    sender = ots_clients(transport, "sender")
    subscriber = ots_clients(transport, "subscriber", routed_via=sender)
    uids = [f"{sender.name}-event-{i}" for i in range(20)]
    for i, uid in enumerate(uids):
        sender.send(cot_event(uid, lat=51.5 + i / 1e7, lon=-1.25, hae=12.5))
        sender.flush()  # one whole event per write: OTS drops the tail of a partial read

    received = {event.uid: event for event in subscriber.wait_for_uids(uids, timeout=30)}
    # OTS re-serialises what it relays but keeps the attribute values as they were sent.
    assert received[uids[7]].lat == pytest.approx(51.5000007, abs=1e-9)
    assert received[uids[7]].lon == -1.25
    assert received[uids[7]].hae == 12.5
    # No echo: OTS does not send a client's own events back to it.
    assert not sender.uids & set(uids)

    def stored() -> set[str]:
        return {str(row["uid"]) for row in ots_api.stored_cot(sender_uid=sender.name)}

    wait_until(
        lambda: set(uids) <= stored(), timeout=30, what="the events in OTS's database", interval=0.5
    )
