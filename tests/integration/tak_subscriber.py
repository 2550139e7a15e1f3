"""A TAK streaming client for tests: connects like ATAK would and records every event it receives.

It reads the server's stream (concatenated ``<event>`` elements, no enclosing document) in a
background thread with lxml's incremental parser. ``connect()`` returns only after a ping/pong
round trip, which proves the TLS handshake is done and the server routes to us: taky silently drops
data for clients still in the handshake, so an earlier return could miss events.

Pings (``t-x-c-t``) and pongs (``t-x-c-t-r``) are counted, not recorded as events.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

PING_TYPE = "t-x-c-t"
PONG_TYPE = "t-x-c-t-r"
_XML_DECLARATION = b"<?xml"


class TakConnectionError(ConnectionError):
    """The server refused or dropped us (e.g. a client certificate from the wrong CA)."""


@dataclass(frozen=True)
class ReceivedEvent:
    uid: str
    type: str
    how: str | None
    lat: float | None
    lon: float | None
    hae: float | None
    ce: float | None
    le: float | None
    time: str | None
    stale: str | None
    raw: bytes
    arrived_at: float  # epoch seconds (comparable with the queue's accepted_at)


def cot_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def cot_event(
    uid: str,
    *,
    type: str = "a-u-G",
    lat: float = 0.0,
    lon: float = 0.0,
    hae: float = 0.0,
    ce: float = 10.0,
    le: float = 10.0,
    how: str = "m-i",
    stale_seconds: float = 60.0,
) -> bytes:
    """A minimal valid CoT event (with ``how``: taky crashes later on events without it)."""
    now = dt.datetime.now(dt.UTC)
    event = etree.Element(
        "event",
        version="2.0",
        uid=uid,
        type=type,
        how=how,
        time=cot_time(now),
        start=cot_time(now),
        stale=cot_time(now + dt.timedelta(seconds=stale_seconds)),
    )
    etree.SubElement(
        event,
        "point",
        lat=f"{lat:.7f}",
        lon=f"{lon:.7f}",
        hae=f"{hae:.2f}",
        ce=f"{ce:.2f}",
        le=f"{le:.2f}",
    )
    etree.SubElement(event, "detail")
    return etree.tostring(event)


class _DeclarationStripper:
    """Removes ``<?xml ...?>`` declarations (some servers send one per event) from a byte stream.

    A declaration may be split across reads, so an unfinished one is held back until complete.
    """

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buffer = self._pending + data
        self._pending = b""
        out = bytearray()
        while True:
            start = buffer.find(_XML_DECLARATION)
            if start < 0:
                break
            end = buffer.find(b"?>", start)
            if end < 0:
                out += buffer[:start]
                self._pending = buffer[start:]
                return bytes(out)
            out += buffer[:start]
            buffer = buffer[end + 2 :]
        # A tail like b"<?x" may be the start of a declaration: keep it for the next read.
        for keep in range(min(len(_XML_DECLARATION) - 1, len(buffer)), 0, -1):
            if _XML_DECLARATION.startswith(buffer[-keep:]):
                self._pending = buffer[-keep:]
                buffer = buffer[:-keep]
                break
        out += buffer
        return bytes(out)


class TakSubscriber:
    """A TAK client (tls:// with a client certificate, or tcp://) that records what it receives."""

    _ids = itertools.count(1)

    def __init__(
        self,
        url: str,
        *,
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        server_name: str | None = "localhost",
        name: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"tls", "ssl", "tcp"} or not parts.hostname or not parts.port:
            raise ValueError(f"expected tls://host:port or tcp://host:port, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port
        self.use_tls = parts.scheme in {"tls", "ssl"}
        self.ca, self.cert, self.key = ca, cert, key
        self.server_name = server_name
        self.name = name or f"test-subscriber-{next(self._ids)}"

        self._sock: socket.socket | None = None
        self._io_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # One lock for all shared state; the I/O thread notifies on every change.
        self._changed = threading.Condition()
        self._events: list[ReceivedEvent] = []
        self._outbox = bytearray()
        self._pongs = 0
        self._pings_sent = 0
        self._own_echoes = 0  # our own events the server sent back (see announce)
        self._received_reads = 0
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.close_reason: str | None = None  # why the stream ended, if it did

    # --- connection ----------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0, *, handshake: str = "ping") -> TakSubscriber:
        """Connect, start the I/O thread, and confirm with a ping/pong round trip, or with
        ``handshake="echo"`` (servers that never answer pings but echo to the sender, like
        FreeTAKServer) by announcing ourselves and waiting for a probe event to come back."""
        try:
            raw = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise TakConnectionError(f"{self.url}: {exc}") from exc
        try:
            if self.use_tls:
                context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
                if self.cert:
                    context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
                sock: socket.socket = context.wrap_socket(raw, server_hostname=self.server_name)
            else:
                sock = raw
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            raise TakConnectionError(f"{self.url}: {exc}") from exc
        # From here on only the I/O thread touches the socket: an SSL object must never be read
        # and written from two threads at once (that corrupts the stream: BAD_RECORD_MAC).
        sock.setblocking(False)
        self._sock = sock
        self._io_thread = threading.Thread(target=self._io_loop, name=self.name, daemon=True)
        self._io_thread.start()
        try:
            if handshake == "echo":
                self.announce(timeout)
            else:
                self.ping(timeout)
        except (TimeoutError, TakConnectionError) as exc:
            self.close()
            raise TakConnectionError(
                f"{self.url}: no {handshake} after connecting ({self.close_reason or exc})"
            ) from exc
        return self

    def announce(self, timeout: float = 10.0, resend_every: float = 0.5) -> float:
        """Send our identity (FreeTAKServer takes a connection's first event as its client and
        does not relay it), then a probe event until the server echoes one back. Our own events
        (uids starting with our name) are counted, never recorded."""
        self.send(cot_event(f"{self.name}", type="a-f-G-U-C", how="h-e", stale_seconds=600))
        self.flush(timeout)
        # The identity must be read alone: wait for the server's first answer (FreeTAKServer
        # sends a welcome chat), at most a second, before writing anything else.
        with contextlib.suppress(TimeoutError):
            self._wait(lambda: self._received_reads > 0, 1.0, "")
        with self._changed:
            before = self._own_echoes
        started = time.monotonic()
        deadline = started + timeout
        while True:
            self.send(cot_event(f"{self.name}-probe", how="h-e", stale_seconds=20))
            remaining = deadline - time.monotonic()
            try:
                self._wait(lambda: self._own_echoes > before, min(resend_every, remaining), "")
                return time.monotonic() - started
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.name}: no echo within {timeout:.1f}s") from None

    def ping(self, timeout: float = 10.0, resend_every: float = 0.5) -> float:
        """Send a TAK ping until a pong comes back; return the seconds since the first ping.

        Resending is needed: taky (select() + non-blocking TLS) can complete a handshake and leave
        the bytes that came with the client's Finished message unread inside OpenSSL until more
        data arrives, so the first ping after connecting may never be answered on its own.
        """
        with self._changed:
            pongs_before = self._pongs
        started = time.monotonic()
        deadline = started + timeout
        while True:
            self.send(cot_event(f"{self.name}-ping", type=PING_TYPE, how="m-g", stale_seconds=20))
            self._pings_sent += 1
            remaining = deadline - time.monotonic()
            try:
                self._wait(lambda: self._pongs > pongs_before, min(resend_every, remaining), "")
                return time.monotonic() - started
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"{self.name}: no pong within {timeout:.1f}s "
                        f"({self._pings_sent} pings sent)"
                    ) from None

    def send(self, data: bytes) -> None:
        """Queue ``data`` for the I/O thread (it is written in order; see ``flush``)."""
        with self._changed:
            if self._sock is None or self.close_reason is not None:
                raise TakConnectionError(f"{self.url}: not connected ({self.close_reason})")
            self._outbox += data
        with contextlib.suppress(BlockingIOError):
            self._wake_writer.send(b"\0")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything sent so far is written to the socket."""
        self._wait(lambda: not self._outbox, timeout, "the send buffer to drain")

    def close(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        if self._io_thread is not None and self._io_thread is not threading.current_thread():
            self._io_thread.join(timeout=5)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> TakSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return (
            self._sock is not None
            and self._io_thread is not None
            and self._io_thread.is_alive()
            and self.close_reason is None
        )

    # --- what was received ---------------------------------------------------------------------

    @property
    def events(self) -> list[ReceivedEvent]:
        with self._changed:
            return list(self._events)

    @property
    def count(self) -> int:
        with self._changed:
            return len(self._events)

    @property
    def uids(self) -> set[str]:
        with self._changed:
            return {e.uid for e in self._events}

    @property
    def duplicates(self) -> int:
        """Events received beyond the first of their uid."""
        with self._changed:
            return len(self._events) - len({e.uid for e in self._events})

    def uid_counts(self) -> Counter[str]:
        with self._changed:
            return Counter(e.uid for e in self._events)

    def events_for(self, uid: str) -> list[ReceivedEvent]:
        with self._changed:
            return [e for e in self._events if e.uid == uid]

    @property
    def pongs(self) -> int:
        with self._changed:
            return self._pongs

    def wait_for_uids(self, uids: Iterable[str], timeout: float) -> list[ReceivedEvent]:
        """Wait until an event for every uid has arrived; return the first event of each."""
        wanted = set(uids)

        def missing() -> set[str]:
            return wanted - {e.uid for e in self._events}

        self._wait(
            lambda: not missing(),
            timeout,
            lambda: f"{len(missing())} of {len(wanted)} uids (e.g. {sorted(missing())[:5]})",
        )
        with self._changed:
            first: dict[str, ReceivedEvent] = {}
            for event in self._events:
                if event.uid in wanted:
                    first.setdefault(event.uid, event)
            return [first[uid] for uid in wanted]

    def wait_for_count(self, count: int, timeout: float) -> list[ReceivedEvent]:
        self._wait(
            lambda: len(self._events) >= count,
            timeout,
            lambda: f"{count} events (have {len(self._events)})",
        )
        return self.events

    def _wait(
        self, condition: Callable[[], bool], timeout: float, what: str | Callable[[], str]
    ) -> None:
        """Wait on the condition variable (the reader notifies) until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                if self.close_reason is not None:
                    raise TakConnectionError(f"{self.url}: connection closed: {self.close_reason}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    text = what() if callable(what) else what
                    raise TimeoutError(
                        f"{self.name}: timed out after {timeout:.1f}s waiting for {text}"
                    )
                self._changed.wait(remaining)

    # --- I/O thread -----------------------------------------------------------------------------

    def _io_loop(self) -> None:
        parser = etree.XMLPullParser(events=("end",), tag="event", resolve_entities=False)
        parser.feed(b"<stream>")  # the stream has no root element: give it one
        stripper = _DeclarationStripper()
        sock = self._sock
        assert sock is not None
        in_flight = b""  # a TLS write that must be retried with the very same bytes
        reason = "closed by us"
        try:
            while not self._stopping.is_set():
                with self._changed:
                    if not in_flight and self._outbox:
                        in_flight = bytes(self._outbox[:65536])
                readable, writable, _ = select.select(
                    [sock, self._wake_reader], [sock] if in_flight else [], [], 0.2
                )
                if self._wake_reader in readable:
                    self._wake_reader.recv(4096)
                if sock in readable and not self._receive(sock, parser, stripper):
                    reason = "closed by the server"
                    break
                if in_flight and sock in writable:
                    written = self._transmit(sock, in_flight)
                    if written:
                        in_flight = b""
                        with self._changed:
                            del self._outbox[:written]
                            self._changed.notify_all()
        except (OSError, ssl.SSLError, etree.XMLSyntaxError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        with self._changed:
            self.close_reason = reason
            self._changed.notify_all()

    def _receive(
        self, sock: socket.socket, parser: etree.XMLPullParser, stripper: _DeclarationStripper
    ) -> bool:
        """Read all there is (TLS may hold decrypted bytes beyond one read); False at EOF."""
        while True:
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return True
            if not data:
                return False
            with self._changed:
                self._received_reads += 1
                self._changed.notify_all()
            parser.feed(stripper.feed(data))
            self._record(parser)

    @staticmethod
    def _transmit(sock: socket.socket, chunk: bytes) -> int:
        try:
            return sock.send(chunk)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return 0

    def _record(self, parser: etree.XMLPullParser) -> None:
        arrived = time.time()
        received: list[ReceivedEvent] = []
        pongs = own = 0
        for _, element in parser.read_events():
            event_type = element.get("type", "")
            if event_type == PONG_TYPE:
                pongs += 1
            elif element.get("uid", "").startswith(self.name):
                own += 1
            elif event_type != PING_TYPE:
                received.append(_to_event(element, arrived))
            # Drop parsed events from the synthetic root so memory stays flat.
            element.clear()
            parent = element.getparent()
            if parent is not None:
                parent.remove(element)
        if received or pongs or own:
            with self._changed:
                self._events.extend(received)
                self._pongs += pongs
                self._own_echoes += own
                self._changed.notify_all()


def _to_event(element: etree._Element, arrived: float) -> ReceivedEvent:
    point = element.find("point")

    def number(name: str) -> float | None:
        if point is None or point.get(name) is None:
            return None
        try:
            return float(point.get(name))
        except ValueError:
            return None

    return ReceivedEvent(
        uid=element.get("uid", ""),
        type=element.get("type", ""),
        how=element.get("how"),
        lat=number("lat"),
        lon=number("lon"),
        hae=number("hae"),
        ce=number("ce"),
        le=number("le"),
        time=element.get("time"),
        stale=element.get("stale"),
        raw=etree.tostring(element),
        arrived_at=arrived,
    )
