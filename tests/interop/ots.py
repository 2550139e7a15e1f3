"""Test-side view of the OpenTAKServer that ``make interop`` runs (scripts/interop/).

``OtsServer.from_env()`` reads what scripts/interop/in-namespace.sh exports: the CoT TCP and TLS
URLs, OTS's CA and server name, the directory of the client certificates it issued (one per user,
CN = user name), and the REST API with its administrator login.

How OpenTAKServer 1.7.14 routes, which the clients here work with (read from its eud_handler):

- It never answers a ping: it sends the ping back to its sender. So ``OtsClient.connect()``
  announces the client with a presence event (``<contact callsign>``) instead of pinging.
- It binds a client's RabbitMQ queues (what makes it receive relayed events) when the client's
  first presence event arrives, and only if the handler's broker channel is open by then;
  otherwise that connection receives nothing for its whole life. There is no signal for it, so
  ``connect_routed`` proves routing with probe events from another connection and reconnects,
  waiting longer before the presence, if none arrives.
- Queues are named after the uid and the callsign: two connections sharing a callsign share a
  queue and split its events between them. Every client here has a unique uid and callsign.
- It does not send a client's own events back to it; it stores every event in its ``cot`` table
  (``/api/cot``).
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import os
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from tak_subscriber import TakConnectionError, TakSubscriber, cot_event, cot_time

from detection_api.local.pki import CertKeyPaths, ClientPaths, PkiPaths


@dataclass(frozen=True)
class OtsServer:
    tcp_url: str
    tls_url: str
    ca: Path
    server_name: str
    cert_dir: Path
    api_url: str
    admin_user: str
    admin_password: str
    log_dirs: tuple[Path, ...]

    @classmethod
    def from_env(cls) -> OtsServer:
        env = os.environ
        return cls(
            tcp_url=env["OTS_TCP_URL"],
            tls_url=env["OTS_TLS_URL"],
            ca=Path(env["OTS_TLS_CA"]),
            server_name=env["OTS_TLS_SERVER_NAME"],
            cert_dir=Path(env["OTS_CERT_DIR"]),
            api_url=env["OTS_API_URL"],
            admin_user=env["OTS_ADMIN_USER"],
            admin_password=env["OTS_ADMIN_PASSWORD"],
            log_dirs=(Path(env["OTS_LOG_DIR"]), Path(env["OTS_DATA_LOG_DIR"])),
        )

    def url(self, transport: str) -> str:
        return self.tls_url if transport == "tls" else self.tcp_url

    def cert(self, user: str) -> tuple[Path, Path]:
        """The client certificate and unencrypted key OTS issued for ``user``."""
        return self.cert_dir / user / f"{user}.pem", self.cert_dir / user / f"{user}.nopass.key"

    def client(self, transport: str, user: str, *, settle: float = 0.0) -> OtsClient:
        """An unconnected client (``user``'s certificate over TLS; anonymous over TCP)."""
        if transport == "tls":
            cert, key = self.cert(user)
            return OtsClient(
                self.tls_url,
                ca=self.ca,
                cert=cert,
                key=key,
                server_name=self.server_name,
                settle=settle,
            )
        return OtsClient(self.tcp_url, settle=settle)

    def forwarder_env(self, transport: str, user: str = "forwarder") -> dict[str, str]:
        """The forwarder's TAK_* variables for this server."""
        if transport != "tls":
            return {"TAK_URL": self.tcp_url}
        cert, key = self.cert(user)
        return {
            "TAK_URL": self.tls_url,
            "TAK_TLS_CA": str(self.ca),
            "TAK_TLS_CERT": str(cert),
            "TAK_TLS_KEY": str(key),
            "TAK_TLS_SERVER_NAME": self.server_name,
        }

    def as_pki(self, users: tuple[str, ...] = ("forwarder", "subscriber")) -> OtsPki:
        """OTS's CA and client certificates in the shape of ``detection_api.local.pki`` (what
        the benchmark helpers take). The server name is OTS's (its certificate's SAN)."""
        server = CertKeyPaths(
            self.cert_dir / "opentakserver" / "opentakserver.pem",
            self.cert_dir / "opentakserver" / "opentakserver.nopass.key",
        )
        clients = {
            user: ClientPaths(
                *self.cert(user), p12=self.cert_dir / user / f"{user}.p12", p12_password=""
            )
            for user in users
        }
        return OtsPki(
            directory=self.cert_dir,
            ca=CertKeyPaths(self.ca, self.ca),
            server=server,
            wrong_host_server=server,
            clients=clients,
            wrong_ca=server,
            wrong_ca_client=server,
            name=self.server_name,
        )

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for directory in self.log_dirs:
            for path in sorted(directory.glob("*.log")):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(out)


@dataclass(frozen=True)
class OtsPki(PkiPaths):
    """``PkiPaths`` for OTS's own CA (only ``ca.cert``, ``clients`` and the server name are
    meaningful: OTS keeps its CA key to itself)."""

    name: str = "opentakserver"

    @property
    def server_name(self) -> str:
        return self.name


def presence_event(uid: str, callsign: str) -> bytes:
    """A TAK presence (self position) event: what OTS takes as a client's identity."""
    now = dt.datetime.now(dt.UTC)
    event = etree.Element(
        "event",
        version="2.0",
        uid=uid,
        type="a-f-G-U-C",
        how="h-e",
        time=cot_time(now),
        start=cot_time(now),
        stale=cot_time(now + dt.timedelta(minutes=10)),
    )
    etree.SubElement(event, "point", lat="0.0", lon="0.0", hae="0.0", ce="9999999", le="9999999")
    detail = etree.SubElement(event, "detail")
    etree.SubElement(detail, "contact", callsign=callsign)
    return etree.tostring(event)


class OtsClient(TakSubscriber):
    """A ``TakSubscriber`` whose ``connect()`` announces itself instead of pinging (OTS echoes
    pings). ``settle`` seconds pass between connecting and the presence event (see the module
    docstring: the presence must not beat OTS's broker channel)."""

    def __init__(self, url: str, *, settle: float = 0.0, **kwargs: object) -> None:
        name = f"interop-{uuid.uuid4().hex[:12]}"
        super().__init__(url, name=name, **kwargs)  # type: ignore[arg-type]
        self.settle = settle

    def ping(self, timeout: float = 10.0, resend_every: float = 0.5) -> float:
        started = time.monotonic()
        if self.settle:
            time.sleep(self.settle)
        self.send(presence_event(self.name, callsign=self.name))
        self.flush(timeout)
        return time.monotonic() - started


def probe(prober: TakSubscriber, client: TakSubscriber, timeout: float) -> bool:
    """Send probe events through ``prober`` (one every 0.25 s) until ``client`` receives one."""
    deadline = time.monotonic() + timeout
    sent: list[str] = []
    while time.monotonic() < deadline:
        uid = f"{prober.name}-probe-{len(sent)}"
        sent.append(uid)
        prober.send(cot_event(uid, how="h-e", stale_seconds=20))
        try:
            client.wait_for_uids([uid], timeout=0.25)
            return True
        except TimeoutError:
            if client.uids & set(sent):
                return True
    return False


def connect_routed(
    server: OtsServer, transport: str, user: str, prober: TakSubscriber, attempts: int = 5
) -> OtsClient:
    """A client that provably receives what OTS relays (see the module docstring)."""
    settle = 0.0 if transport == "tls" else 0.5  # a TLS handshake gives OTS the time already
    for _ in range(attempts):
        client = server.client(transport, user, settle=settle).connect()
        if probe(prober, client, timeout=5.0):
            return client
        client.close()
        settle = max(0.5, settle * 2)
    raise TakConnectionError(f"{server.url(transport)}: OTS never routed to a {user} client")


class OtsApi:
    """OTS's REST API as its administrator (session cookie from ``/api/login``)."""

    def __init__(self, server: OtsServer) -> None:
        self.base = server.api_url.rstrip("/")
        jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self._post("/api/login", {"username": server.admin_user, "password": server.admin_password})

    def _post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with self._opener.open(request, timeout=10) as response:
            return json.load(response)

    def _get(self, path: str, **params: object) -> dict[str, object]:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with self._opener.open(url, timeout=30) as response:
            return json.load(response)

    def stored_cot(self, **filters: str) -> list[dict[str, object]]:
        """Every stored event matching ``filters`` (how, type, sender_uid, sender_callsign)."""
        results: list[dict[str, object]] = []
        page = 1
        while True:
            answer = self._get("/api/cot", page=page, per_page=500, **filters)
            results.extend(answer["results"])  # type: ignore[arg-type]
            if page >= int(answer["total_pages"]):  # type: ignore[call-overload]
                return results
            page += 1
