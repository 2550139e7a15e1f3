"""Broker deliveries and the public host against the real function process, started with exactly
the environment the rendered prod overlay gives its container (ConfigMap, env, Knative's own
variables; only the Secret values are the test's). The hops in front of it (Broker ingress,
filter, dispatcher; DomainMapping ingress; queue-proxy) are replayed by knative_delivery.py
from Knative's code: no cluster runs here."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from knative_delivery import BrokerPlayer, Route, public_request, service_host, trigger_spec
from product import function_argv
from test_function_http import detection

from detection_api.app.cluster_events import is_cluster_delivery
from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.settings import DETECTION_CREATED_TYPE, DETECTION_GEOLOCATED_TYPE
from support import k8s_render as k8s
from support.pod_env import container_environment, knative_environment

SECRET = "broker-test-secret-" + "y" * 24  # generated for the test, never a real key
EVENTS = 40


@pytest.fixture
def prod(redis_server, start_process) -> dict[str, Any]:
    """The prod overlay's function, running: its URL, Trigger, public host and environment."""
    objs = k8s.bundle("prod")
    service = k8s.function_service(objs)
    template = service["spec"]["template"]
    (container,) = template["spec"]["containers"]
    secrets = {
        ("redis-credentials", "redis-url"): redis_server.url,
        ("jwt-keys", "secret-key"): SECRET,
    }
    port = free_port()
    env = {
        **container_environment(objs, container, secrets),
        # Unreleased, the template names no revision: Knative names the first one -00001.
        **knative_environment(service, template["metadata"].get("name", "detection-api-00001")),
        "PORT": str(port),
    }
    start_process(
        "function",
        function_argv(port),
        env=env,
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"),
        cwd=str(k8s.REPO),
    )
    (mapping,) = [o for o in objs if o["kind"] == "DomainMapping"]
    return {
        "url": f"http://127.0.0.1:{port}",
        "trigger": trigger_spec(k8s.find(objs, "Trigger", "detection-created")),
        "public_host": mapping["metadata"]["name"],
        "env": env,
    }


def producer_requests(count: int) -> list[tuple[dict[str, str], bytes]]:
    """What producers send to the Broker: binary and structured, with and without a token (the
    Broker drops it), tracing headers, the SinkBinding's extension."""
    sent = []
    for i in range(count):
        attributes = {
            "type": DETECTION_CREATED_TYPE,
            "source": f"/cameras/cam-{i % 3}",
            "id": f"broker-{i}",
            "datacontenttype": "application/json",
        }
        if i % 4 == 0:
            attributes["producer"] = "sinkbinding"  # SinkBinding ceOverrides
        event = CloudEvent(attributes, detection(track_id=f"t-{i}"))
        headers, body = to_structured(event) if i % 2 else to_binary(event)
        extra = {
            "X-Request-Id": f"req-{i}",
            "X-B3-TraceId": f"{i:032x}",
            "traceparent": f"00-{i:032x}-{i + 1:016x}-01",
        }
        if i % 3 == 0:
            extra["Authorization"] = "Bearer not-a-real-token"
        sent.append(({**dict(headers), **extra}, body))
    return sent


def test_the_prod_function_trusts_only_its_cluster_local_address(prod) -> None:
    env = prod["env"]
    assert env["AUTH_TRUST_CLUSTER_EVENTS"] == "true"
    assert env["REPLY_EVENTS"] == "true"
    trigger = prod["trigger"]
    # The Trigger delivers to the function's own cluster-local address, which the rule trusts;
    # the public host of the DomainMapping is not such an address.
    assert trigger.subscriber == Route(service_host("detection-api", "detection-api"), "/")
    domain = env["CLUSTER_DOMAIN"]
    assert is_cluster_delivery("POST", trigger.subscriber.path, trigger.subscriber.host, domain)
    assert not is_cluster_delivery("POST", "/", prod["public_host"], domain)


def test_every_broker_delivery_is_accepted(prod, redis_server) -> None:
    player = BrokerPlayer(prod["url"], prod["trigger"])
    deliveries = [player.ingress(headers, body) for headers, body in producer_requests(EVENTS)]
    assert all(d is not None for d in deliveries)
    accepted = [d for d in deliveries if d is not None and d.accepted]
    assert len(accepted) == EVENTS, [d.statuses for d in deliveries if d and not d.accepted]
    assert player.dead_letters == []
    for delivery in accepted:
        # The reply goes back to the Broker; its type does not match the Trigger: no loop.
        assert delivery.reply is not None
        assert delivery.reply["type"] == DETECTION_GEOLOCATED_TYPE
        assert not player.matches(delivery.reply)
    assert redis_server.client().llen("rq:queue:tak") >= 1


def test_the_public_host_refuses_every_unauthenticated_event(prod, redis_server) -> None:
    spoofed = {
        # Each names the cluster-local address, the Broker or Knative; none may matter.
        "K-Original-Host": service_host("detection-api", "detection-api"),
        "X-Forwarded-Host": service_host("detection-api", "detection-api"),
        "Forwarded": f"host={service_host('detection-api', 'detection-api')}",
        "Kn-Namespace": "detection-api",
        "Prefer": "reply",
        "Knative-Serving-Namespace": "detection-api",
        "X-Forwarded-For": "10.0.0.7",
    }
    refused = []
    for i, (headers, body) in enumerate(producer_requests(EVENTS)):
        headers.pop("Authorization", None)
        extra = spoofed if i % 2 else {}
        for path in ("/", "/dead-letters"):
            reply = public_request(
                prod["url"], prod["public_host"], "POST", path, body, {**headers, **extra}
            )
            refused.append(reply.status)
            assert reply.header("content-type") == "application/problem+json"
    # 401, or 429 once the failed-authentication throttle (AUTH_FAILURE_RATE_LIMIT) trips.
    assert refused[0] == 401
    assert set(refused) <= {401, 429}, refused
    client = redis_server.client()
    assert client.llen("rq:queue:tak") == 0
    assert not client.keys("detection:record*")


def test_a_redis_outage_is_retried_until_accepted(prod, redis_server) -> None:
    """503 while Redis is down is retried with the Trigger's backoff (0.5 s, 1 s, 2 s ...)."""
    player = BrokerPlayer(prod["url"], prod["trigger"])
    headers, body = producer_requests(1)[0]
    redis_server.kill()
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(player.ingress(headers, body)))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while player.attempts == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        redis_server.restart()
        worker.join(timeout=150)
    (delivery,) = result
    assert delivery.statuses[0] == 503
    assert 200 <= delivery.statuses[-1] < 300
    assert player.dead_letters == []


def test_a_bad_event_is_dead_lettered_at_once(prod) -> None:
    """400 is not retried: the event goes to the dead-letter sink, the function's /dead-letters
    on its cluster-local address (the route itself arrives with the producers' work)."""
    player = BrokerPlayer(prod["url"], prod["trigger"])
    event = CloudEvent(
        {"type": DETECTION_CREATED_TYPE, "source": "/cameras/bad", "id": "bad-1"},
        {"pixel_x": "not a number"},
    )
    headers, body = to_binary(event)
    delivery = player.ingress(dict(headers), body)
    assert delivery is not None
    assert delivery.statuses == [400]
    assert delivery.dead_letter is not None
    route, dead = delivery.dead_letter
    assert route == Route(service_host("detection-api", "detection-api"), "/dead-letters")
    assert is_cluster_delivery("POST", route.path, route.host, prod["env"]["CLUSTER_DOMAIN"])
    assert dead["knativeerrorcode"] == "400"
    assert dead["knativeerrordest"] == "http://detection-api.detection-api.svc.cluster.local/"
    problem = json.loads(base64.b64decode(dead["knativeerrordata"]))
    assert problem["status"] == 400
    assert dead["id"] == "bad-1"


def test_events_of_other_types_never_reach_the_function(prod, redis_server) -> None:
    player = BrokerPlayer(prod["url"], prod["trigger"])
    event = CloudEvent({"type": DETECTION_GEOLOCATED_TYPE, "source": "/x", "id": "r"}, {"a": 1})
    headers, body = to_binary(event)
    assert player.ingress(dict(headers), body) is None
    assert player.attempts == 0
