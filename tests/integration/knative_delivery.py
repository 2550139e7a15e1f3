"""Knative's two ways into the function, replayed from Knative's own code (no cluster here).

- ``BrokerPlayer``: a default (MT channel-based) Broker with one Trigger, read from the rendered
  bundle. Its ingress parses the producer's CloudEvent and keeps only the headers
  ``PassThroughHeaders`` keeps (eventing ``pkg/utils/headers.go``: ``x-request-id``,
  ``retry-after``, ``knative-*``, ``x-b3-*``); its filter matches the Trigger's attributes; its
  dispatcher (``pkg/kncloudevents/event_dispatcher.go``) posts the event in binary mode to the
  subscriber's cluster-local address with ``Prefer: reply`` and ``Kn-Namespace`` added, retries
  5xx, 404, 408, 409 and 429 (``retries.go`` ``SelectiveRetry``) up to ``delivery.retry`` times with
  the Trigger's backoff, and sends anything else that failed to the dead-letter sink with the
  ``knativeerrorcode``, ``knativeerrordest`` and ``knativeerrordata`` extensions.
- ``public_request``: what reaches the function from the internet through the DomainMapping.
  Its ingress rule routes only the mapped host, rewrites the host to the Service's cluster-local
  name and *sets* ``K-Original-Host`` to the public host (serving
  ``reconciler/domainmapping/resources/ingress.go``; Kourier writes it with
  ``OVERWRITE_IF_EXISTS_OR_ADD``); queue-proxy then makes ``K-Original-Host`` the ``Host`` and
  drops the header (networking ``header.RewriteHostOut``).

Both end in queue-proxy, which hands the function ``Host`` = the address the request was sent to.
The function process is real; only the hops in front of it are replayed here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from http_client import Reply, request

PASS_THROUGH_HEADERS = frozenset({"x-request-id", "retry-after"})
PASS_THROUGH_PREFIXES = ("knative-", "x-b3-")
RETRIED = frozenset({404, 408, 409, 429})
ERROR_DATA_MAX = 1024  # attributes.KnativeErrorDataExtensionMaxLength


def pass_through(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name.lower() in PASS_THROUGH_HEADERS or name.lower().startswith(PASS_THROUGH_PREFIXES)
    }


def is_retried(status: int) -> bool:
    return status >= 500 or status in RETRIED


def parse_iso_seconds(period: str) -> float:
    """The ``PT<n>S`` durations the Trigger uses."""
    assert period.startswith("PT") and period.endswith("S"), period
    return float(period[2:-1])


def service_host(name: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    """A Knative Service's ``status.address.url`` host."""
    return f"{name}.{namespace}.svc.{cluster_domain}"


@dataclass(frozen=True)
class Route:
    """Where a Trigger sends events: the Service's cluster-local host and a path."""

    host: str
    path: str


@dataclass(frozen=True)
class TriggerSpec:
    namespace: str
    filter: dict[str, str]
    subscriber: Route
    retry: int
    backoff_delay_s: float
    backoff_policy: str
    dead_letter_sink: Route | None


def _route(destination: dict[str, Any], namespace: str) -> Route:
    ref = destination["ref"]
    assert (ref["apiVersion"], ref["kind"]) == ("serving.knative.dev/v1", "Service"), ref
    return Route(service_host(ref["name"], namespace), destination.get("uri", "/") or "/")


def trigger_spec(trigger: dict[str, Any]) -> TriggerSpec:
    namespace = trigger["metadata"]["namespace"]
    spec = trigger["spec"]
    delivery = spec.get("delivery", {})
    sink = delivery.get("deadLetterSink")
    return TriggerSpec(
        namespace=namespace,
        filter=dict(spec.get("filter", {}).get("attributes", {})),
        subscriber=_route(spec["subscriber"], namespace),
        retry=int(delivery.get("retry", 0)),
        backoff_delay_s=parse_iso_seconds(delivery.get("backoffDelay", "PT0S")),
        backoff_policy=delivery.get("backoffPolicy", "exponential"),
        dead_letter_sink=_route(sink, namespace) if sink else None,
    )


@dataclass
class Delivery:
    event: CloudEvent
    statuses: list[int] = field(default_factory=list)
    reply: CloudEvent | None = None
    dead_letter: tuple[Route, CloudEvent] | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.statuses) and 200 <= self.statuses[-1] < 300


class BrokerPlayer:
    """A default Broker and one Trigger in front of a function listening on ``base_url``.

    ``sleep`` waits between retries (the Trigger's own backoff); dead letters are recorded in
    ``dead_letters`` (where they would go and what they would carry), not posted.
    """

    def __init__(
        self,
        base_url: str,
        trigger: TriggerSpec,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url
        self.trigger = trigger
        self.sleep = sleep
        self.dead_letters: list[tuple[Route, CloudEvent]] = []
        self.attempts = 0  # answers received from the subscriber

    def matches(self, event: CloudEvent) -> bool:
        attributes = event.get_attributes()
        return all(attributes.get(k) == v for k, v in self.trigger.filter.items())

    def backoff(self, attempt: int) -> float:
        delay = self.trigger.backoff_delay_s
        return (
            delay * 2**attempt if self.trigger.backoff_policy == "exponential" else delay * attempt
        )

    def ingress(self, headers: Mapping[str, str], body: bytes) -> Delivery | None:
        """A producer's POST to the Broker: None when the Trigger's filter drops it."""
        event = from_http(dict(headers), body)
        event["knativearrivaltime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if not self.matches(event):
            return None
        return self.dispatch(event, pass_through(headers))

    def _send(self, route: Route, event: CloudEvent, extra: Mapping[str, str]) -> Reply:
        ce_headers, body = to_binary(event)
        headers = {**extra, **dict(ce_headers), "Host": route.host}
        return request(self.base_url, "POST", route.path, body, headers)

    def dispatch(self, event: CloudEvent, forwarded: Mapping[str, str]) -> Delivery:
        delivery = Delivery(event)
        extra = {**forwarded, "Prefer": "reply", "Kn-Namespace": self.trigger.namespace}
        reply = None
        for attempt in range(self.trigger.retry + 1):
            reply = self._send(self.trigger.subscriber, event, extra)
            delivery.statuses.append(reply.status)
            self.attempts += 1
            if not is_retried(reply.status) or attempt == self.trigger.retry:
                break
            self.sleep(self.backoff(attempt))
        assert reply is not None
        if delivery.accepted:
            if reply.body and reply.header("ce-type"):
                delivery.reply = from_http(reply.headers, reply.body)
            return delivery
        if self.trigger.dead_letter_sink is not None:
            dead = CloudEvent(event.get_attributes(), event.get_data())
            dead["knativeerrordest"] = (
                f"http://{self.trigger.subscriber.host}{self.trigger.subscriber.path}"
            )
            dead["knativeerrorcode"] = str(reply.status)
            dead["knativeerrordata"] = base64.b64encode(reply.body).decode()[:ERROR_DATA_MAX]
            delivery.dead_letter = (self.trigger.dead_letter_sink, dead)
            self.dead_letters.append(delivery.dead_letter)
        return delivery


def public_request(
    base_url: str,
    public_host: str,
    method: str,
    path: str,
    body: bytes | None,
    headers: Mapping[str, str],
) -> Reply:
    """A client's request to ``https://<public_host><path>`` as the function receives it.

    The client's own ``K-Original-Host`` is overwritten by the ingress and then consumed by
    queue-proxy, so ``Host`` is always the public host; every other header passes unchanged.
    (A request naming any other host never reaches the function: the public gateway has no
    virtual host for a cluster-local Service.)
    """
    client = {k: v for k, v in headers.items() if k.lower() not in {"host", "k-original-host"}}
    return request(base_url, method, path, body, {**client, "Host": public_host})
