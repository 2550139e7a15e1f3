"""Which unauthenticated requests are Broker deliveries (``AUTH_TRUST_CLUSTER_EVENTS``).

A Knative Broker forwards only ``x-request-id``, ``retry-after``, ``knative-*`` and ``x-b3-*``
headers to a subscriber (eventing ``pkg/utils/headers.go``), so a producer's ``Authorization``
never reaches the function, and Eventing's OIDC is off by default. What does tell a delivery apart
from a request from the internet is the **address it was sent to**, as Knative hands it over:

- The Broker posts to the subscriber's cluster-local address, the Service's
  ``status.address.url``: ``http://<service>.<namespace>.svc.<cluster domain>``.
- The public host is a DomainMapping. Its ingress rule rewrites the host to that same
  cluster-local name but *sets* ``K-Original-Host: <public host>`` (serving
  ``domainmapping/resources/ingress.go``; the ingress overwrites a client's own value), and
  queue-proxy, in front of every pod, restores the ``Host`` from ``K-Original-Host`` and drops
  that header (networking ``header.RewriteHostOut``).
  The activator keeps an existing ``K-Original-Host``. So the function sees the public host name.
- A Service that is not cluster-local also has an external route of its own, where a client could
  send its own ``K-Original-Host`` naming the cluster-local host: that is why trust needs the
  Service labelled ``networking.knative.dev/visibility: cluster-local`` (``knative/base`` does, and
  ``tests/deployment/test_production_https.py`` refuses a bundle that trusts cluster events
  without it).

The rule here is pure (no Flask): a request is a cluster delivery when its ``Host`` is a
cluster-local Service address (``<name>.<namespace>.svc`` or ``...svc.<cluster domain>``, any
port) and it is a POST to one of the event paths. Anything that can reach the Broker inside the
cluster can deliver events either way; OIDC (``EVENTING_OIDC_*``) is the stronger option where
the cluster enables it.
"""

from __future__ import annotations

import re

# POST / (CloudEvents) and the Trigger's dead-letter sink.
EVENT_PATHS = frozenset({"/", "/dead-letters"})

_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_PORT = re.compile(r":[0-9]{1,5}$")


def host_name(host: str) -> str:
    """The host of a ``Host`` header value, lower case, without port or trailing dot."""
    return _PORT.sub("", host.strip().lower()).rstrip(".")


def is_cluster_local_host(host: str, cluster_domain: str = "cluster.local") -> bool:
    """``<service>.<namespace>.svc`` or ``<service>.<namespace>.svc.<cluster_domain>``."""
    name = host_name(host)
    domain = re.escape(cluster_domain.strip().lower().strip("."))
    pattern = rf"{_LABEL}\.{_LABEL}\.svc(\.{domain})?" if domain else rf"{_LABEL}\.{_LABEL}\.svc"
    return re.fullmatch(pattern, name) is not None


def is_cluster_delivery(
    method: str, path: str, host: str, cluster_domain: str = "cluster.local"
) -> bool:
    """True for a POST to an event path reached through the Service's cluster-local address."""
    return method == "POST" and path in EVENT_PATHS and is_cluster_local_host(host, cluster_domain)
