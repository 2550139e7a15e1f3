"""store/job_events.py: what a delivery job may carry to a TAK server."""

from __future__ import annotations

import pytest

from detection_api.store.job_events import PayloadRejected, check_cot_event, check_cot_events


def event(uid: str) -> str:
    return f"<event version='2.0' uid='{uid}' type='a-u-G' how='m-i'><point lat='1'/></event>"


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([b"<event uid='a' type='t' how='h'/>", b"<event uid='b' type='t'/>"], "lacks how"),
        # Pieces another event of the job would complete are refused: each event stands alone.
        ([b"<event uid='a' type='t' how='h'><detail>", b"</detail></event>"], "well-formed"),
        (
            [b"<event uid='a' type='t' how='h'>", b"<event uid='b' type='t' how='h'/></event>"],
            "well-formed",
        ),
        ([b"<event uid='a' type='t' how='h'/>junk"], "well-formed"),
        ([b"<event uid='a' type='t' how='h'/><x/>"], "well-formed"),
        ([b"<event uid='a' type='t' how='h'/><!DOCTYPE x>"], "well-formed"),
        ([b"<eventx uid='a' type='t' how='h'/>"], "not an <event>"),
    ],
)
def test_every_event_of_a_job_is_checked(events: list[bytes], reason: str) -> None:
    with pytest.raises(PayloadRejected, match=reason):
        check_cot_events(events)


def test_a_good_job_passes() -> None:
    check_cot_events([event(f"u{i}").encode() for i in range(100)])


# --- what may go on the wire ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cot", "reason"),
    [
        (b"<event uid='a' type='a-u-G' how='m-i'>&</event>", "not well-formed"),
        (b"<event uid='a' type='a-u-G'/>", "lacks how"),
        (b"<evt uid='a' type='a-u-G' how='m-i'/>", "not an <event>"),
        (
            b"<event uid='a' type='a-u-G' how='m-i'/><event uid='b' type='x' how='y'/>",
            "well-formed",
        ),
    ],
)
def test_events_that_would_break_the_connection_are_refused(cot: bytes, reason: str) -> None:
    with pytest.raises(PayloadRejected, match=reason):
        check_cot_event(cot)
