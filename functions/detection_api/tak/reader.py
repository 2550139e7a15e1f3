"""The incremental reader of a TAK server's byte stream: concatenated ``<event>`` elements, each
possibly with its own XML declaration, split anywhere across reads, with a cap on how large an
unfinished event may grow. Pure: bytes in, events out.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET  # nosec B405 # expat >= 2.4 caps entity amplification and resolves no external entities
from collections.abc import Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)

# An event still unfinished after this many bytes is a peer gone wrong (one sent an endless
# <event> and grew the forwarder to 1.4 GB): the connection is dropped as an outage and counted.
MAX_UNFINISHED_EVENT_BYTES = 1_048_576

_XML_DECLARATION = re.compile(rb"<\?xml[^>]*\?>")


class SeenEvent(NamedTuple):
    """What the forwarder needs of an event the server sent: its type, uid and our nonce."""

    type: str
    uid: str
    nonce: str | None  # <detail><__delivery nonce="..."/> (see tak_confirm), if any


class StreamTooLarge(Exception):
    """An event grew past ``MAX_UNFINISHED_EVENT_BYTES`` without ending."""


class CotStreamReader:
    """Incremental parser of the server's byte stream: yields each ``<event>`` it completes.

    The server sends pongs, but also every event other clients publish (and, on some servers, our
    own events echoed back), each possibly with its own ``<?xml ...?>`` declaration, split
    anywhere across reads. The stream is parsed as the children of a made-up root element;
    declarations are removed (a second one would be a syntax error). Bytes fed since the last
    completed event are counted: past ``max_unfinished`` the reader raises
    :class:`StreamTooLarge` instead of growing without end (counted per read, so the check may
    trigger up to one read late).
    """

    def __init__(self, max_unfinished: int = MAX_UNFINISHED_EVENT_BYTES) -> None:
        self._held_back = b""
        self._parser = self._new_parser()
        self._depth = 0
        self._root: ET.Element | None = None
        self._max_unfinished = max_unfinished
        self._unfinished = 0

    @staticmethod
    def _new_parser() -> ET.XMLPullParser:
        parser = ET.XMLPullParser(events=("start", "end"))
        parser.feed(b"<stream>")
        return parser

    def feed(self, data: bytes) -> list[str]:
        """The types of the events completed by ``data``."""
        return [seen.type for seen in self.feed_events(data)]

    def feed_events(self, data: bytes) -> list[SeenEvent]:
        size = len(data)
        data = _XML_DECLARATION.sub(b"", self._held_back + data)
        data, self._held_back = _split_unfinished_declaration(data)
        try:
            self._parser.feed(data)
            events = list(self._events())
        except ET.ParseError as exc:
            # A malformed event from the server: start afresh. If a pong was inside it, the
            # confirmation times out and the batch is sent again (at least once).
            log.warning("unparseable data from the TAK server, resetting the reader: %s", exc)
            self._parser = self._new_parser()
            self._depth = 0
            self._root = None
            self._unfinished = 0
            return []
        self._unfinished = 0 if events else self._unfinished + size
        if self._unfinished > self._max_unfinished:
            raise StreamTooLarge(
                f"an event from the server is still unfinished after {self._unfinished} bytes"
            )
        return events

    def _events(self) -> Iterator[SeenEvent]:
        for kind, element in self._parser.read_events():
            assert isinstance(element, ET.Element)
            if kind == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = element
                continue
            self._depth -= 1
            if self._depth == 1 and element.tag == "event":
                stamp = element.find("detail/__delivery")
                nonce = stamp.get("nonce") if stamp is not None else None
                yield SeenEvent(element.get("type", ""), element.get("uid", ""), nonce)
                if self._root is not None:
                    self._root.clear()  # keep memory flat on a long-lived connection


def _split_unfinished_declaration(data: bytes) -> tuple[bytes, bytes]:
    """Hold back a tail that may be the start of an XML declaration completed by the next read."""
    start = data.rfind(b"<")
    if start < 0:
        return data, b""
    tail = data[start:]
    if b"<?xml".startswith(tail) or (tail.startswith(b"<?xml") and b"?>" not in tail):
        return data[:start], tail
    return data, b""
