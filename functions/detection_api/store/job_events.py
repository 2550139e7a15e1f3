"""What a delivery job may carry to a TAK server: each CoT event one well-formed ``<event>``
element with uid, type and how, and nothing after it; ``PayloadRejected`` (a job that can never
be delivered, with its reason) otherwise. ``tak_jobs.parse_payload`` checks every job it reads.

A malformed event is not only undeliverable: taky stops parsing the rest of the connection after
one (and crashes later on an event without ``how``), which would fail every event sent after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from xml.parsers import expat  # nosec B407 # events start with their root element: no DTD, so no entities


class PayloadRejected(Exception):
    """A job that can never be delivered as it is: it goes to the dead letters with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_cot_events(events: Sequence[bytes]) -> None:
    """Every event of a job is one well-formed ``<event>`` element with uid, type and how. Each
    is parsed on its own by expat, so a piece of an event that another event of the job would
    complete is refused too, and so is anything after its root element."""
    for event in events:
        check_cot_event(event)


class _RootElement:
    """The first element expat reports; then the handler is dropped, so checking an event costs
    one Python call, not one per element (10 us an event instead of 14 for a whole tree)."""

    __slots__ = ("attributes", "name", "parser")

    def __init__(self) -> None:
        self.parser = expat.ParserCreate()
        self.parser.StartElementHandler = self._start
        self.name = ""
        self.attributes: dict[str, str] = {}

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        self.name, self.attributes = name, attributes
        self.parser.StartElementHandler = None


def check_cot_event(event: bytes) -> None:
    """One well-formed ``<event>`` element with uid, type and how, and nothing after it."""
    if not event.startswith(b"<event"):
        raise PayloadRejected("CoT payload is not an <event> element")
    root = _RootElement()
    try:
        # The event starts with its root element, so no DOCTYPE (and no entity) can come first;
        # one after it, or a second element, is "junk after document element".
        root.parser.Parse(event, True)
    except expat.ExpatError as exc:
        raise PayloadRejected(f"CoT event is not well-formed XML: {exc}") from exc
    finally:
        root.parser.StartElementHandler = None
    if root.name != "event":
        raise PayloadRejected("CoT payload is not an <event> element")
    missing = [name for name in ("uid", "type", "how") if not root.attributes.get(name)]
    if missing:
        raise PayloadRejected(f"CoT event lacks {', '.join(missing)}")
