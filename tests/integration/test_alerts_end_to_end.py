"""Operators' alerts through the real processes: the function queues a Discord alert with an
alert-class detection, the worker's notifier posts it; a TAK outage longer than the threshold
posts one "disconnected" and, when taky is back, one "reconnected" -- and the detections sent
during the outage still arrive."""

from __future__ import annotations

import json

from http_client import post_json
from product import start_forwarder, start_function
from test_end_to_end import _wait_confirmed
from test_function_http import detection
from test_notifier import WebhookReceiver

from detection_api.local.procs import wait_until


def _texts(receiver: WebhookReceiver) -> list[str]:
    return [json.dumps(r.body) for r in receiver.delivered()]


def test_detection_alert_outage_alert_and_recovery(
    redis_server, taky_tls, tak_subscriber, start_process
):
    receiver = WebhookReceiver().start()
    try:
        env = {
            "REDIS_URL": redis_server.url,
            "AUTH_DISABLED": "true",
            "DISCORD_WEBHOOK_URL": receiver.url,
            "ALERT_CLASSES": "vehicle",
            "ALERT_MIN_CONFIDENCE": "0.5",
            "TAK_DISCONNECT_ALERT_SECONDS": "1",
            "TAK_RECONNECT_MAX_SECONDS": "1",
        }
        url = start_function(start_process, env)
        start_forwarder(start_process, {**env, **taky_tls.client_env()})
        first = post_json(url, "/api/v1/detections", detection(), Accept="application/json").json
        wait_until(
            lambda: any("vehicle" in t for t in _texts(receiver)), 30, what="the vehicle alert"
        )
        alert = _texts(receiver)[0]
        assert f"{first['geolocation']['lat']:.5f}"[:7] in alert
        assert "openstreetmap.org" in alert
        tak_subscriber.wait_for_uids({first["uid"]}, timeout=30)

        taky_tls.stop()
        during = post_json(
            url, "/api/v1/detections", detection(object_class="person"), Accept="application/json"
        )
        assert during.status == 201  # accepted while TAK is down
        wait_until(
            lambda: any("disconnected" in t.lower() for t in _texts(receiver)),
            30,
            what="the TAK disconnected alert",
        )
        taky_tls.start()
        wait_until(
            lambda: any(
                "reconnected" in t.lower() or "back" in t.lower() for t in _texts(receiver)
            ),
            60,
            what="the TAK reconnected notice",
        )
        disconnected = [t for t in _texts(receiver) if "disconnected" in t.lower()]
        assert len(disconnected) == 1  # one per outage, not one per reconnect attempt
        # What was accepted during the outage is delivered once taky is back.
        _wait_confirmed(url, [first["id"], during.json["id"]], timeout=60)
    finally:
        receiver.stop()
