"""Who is the producer of a request: the identity every record, marker and track uid is scoped to.

- A JWT: its subject (``sub:<subject>``). Every token with that subject is the same producer: it
  can resend (a duplicate), read (``detections:read``) and move its own tracks, nobody else's.
- A trusted in-cluster delivery (``AUTH_TRUST_CLUSTER_EVENTS`` or a Knative Eventing OIDC token):
  the Broker delivers for every producer with one identity, so the producer is the CloudEvent
  ``source`` (``cluster:<source>``), which in-cluster sources (SinkBinding, ApiServerSource...)
  set to their own Kubernetes address.
- ``AUTH_DISABLED``: one producer, ``anonymous``.

Framework-free: the HTTP layer passes the verified ``Principal`` in.
"""

from __future__ import annotations

from detection_api.auth import Principal

CLUSTER_VIAS = frozenset({"cluster-trust", "eventing-oidc"})


def producer_of(principal: Principal, event_source: str | None = None) -> str:
    """The producer identity of a write (``event_source``: the CloudEvent source, if any)."""
    if principal.via in CLUSTER_VIAS:
        return f"cluster:{event_source or ''}"
    if principal.via == "jwt":
        return f"sub:{principal.subject}"
    return "anonymous"


def may_read(principal: Principal, record_producer: str | None) -> bool:
    """A reader sees its own producer's records; ``admin`` and ``detections:read-all`` see all."""
    if principal.reads_all or principal.via == "auth-disabled":
        return True
    return record_producer is not None and record_producer == producer_of(principal)
