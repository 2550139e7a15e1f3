"""One Knative Service as the API server, Serving's webhook and its Configuration reconciler
treat it, replayed from knative/serving (no cluster here):

- webhook, ``pkg/apis/serving/v1/revision_validation.go``: a revision name given in the template
  is a DNS-1035 label starting with ``<service>-`` (``validateRevisionName``); on an update that
  keeps the name, the template must not change: "Saw the following changes without a name change"
  (``VerifyNameChange``).
- reconciler, ``pkg/reconciler/configuration/configuration.go``: a template name that is already
  a Revision is reused only when that Revision's spec equals the template's spec
  (``CheckNameAvailability``), else the Configuration fails with "already exists"; without a name
  every new template generation gets a new Revision ``<service>-0000N``.
- traffic (``pkg/apis/serving/v1/traffic_validation.go`` and the route reconciler): percentages
  sum to 100, tags are unique, each target names exactly one of ``revisionName`` /
  ``latestRevision: true``, and a named revision exists once the update is reconciled.

``kubectl apply`` is modelled as replacing the Service's spec: every field of it comes from the
release, so the three-way merge of client-side apply gives the same object. ``kubectl patch
--type merge`` on ``spec.traffic`` replaces the list and leaves the template alone.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class Rejected(Exception):
    """The API server (webhook) refused the request."""


class NotReady(Exception):
    """Accepted, but the Service can never become Ready (reconciler conflict, missing revision)."""


@dataclass
class KnativeService:
    name: str
    template: Obj | None = None
    traffic: list[Obj] = field(default_factory=list)
    revisions: dict[str, Obj] = field(default_factory=dict)  # name -> spec
    latest: str | None = None
    generation: int = 0
    events: list[str] = field(default_factory=list)

    # --- the webhook ---------------------------------------------------------------------------

    def _validate_name(self, template: Obj) -> None:
        name = template.get("metadata", {}).get("name")
        if name is None:
            return
        if len(name) > 63 or not DNS_1035.match(name):
            raise Rejected(f"invalid value {name!r}: not a DNS 1035 label: metadata.name")
        if not name.startswith(self.name + "-"):
            raise Rejected(f'"{name}" must have prefix "{self.name}-": metadata.name')
        if self.template is not None:
            old_name = self.template.get("metadata", {}).get("name")
            if name == old_name and template != self.template:
                raise Rejected(
                    "Saw the following changes without a name change (-old +new): metadata.name"
                )

    @staticmethod
    def _validate_traffic(traffic: list[Obj]) -> None:
        total = sum(int(t.get("percent", 0)) for t in traffic)
        if traffic and total != 100:
            raise Rejected(f"traffic percentages sum to {total}, want 100")
        tags = Counter(t["tag"] for t in traffic if t.get("tag"))
        if any(count > 1 for count in tags.values()):
            raise Rejected(f"duplicate traffic tags {tags}")
        for target in traffic:
            if bool(target.get("revisionName")) == bool(target.get("latestRevision")):
                raise Rejected(f"traffic target {target} needs revisionName xor latestRevision")

    # --- the reconcilers -----------------------------------------------------------------------

    def _reconcile_template(self) -> None:
        assert self.template is not None
        name = self.template.get("metadata", {}).get("name")
        spec = self.template["spec"]
        if name is None:
            name = f"{self.name}-{self.generation:05d}"
        if name in self.revisions:
            if self.revisions[name] != spec:
                raise NotReady(f"revisions {name!r} already exists (with another spec)")
        else:
            self.revisions[name] = copy.deepcopy(spec)
            self.events.append(f"Created Revision {name}")
        self.latest = name

    def _check_traffic(self) -> None:
        for target in self.traffic:
            name = target.get("revisionName")
            if name is not None and name not in self.revisions:
                raise NotReady(f"RevisionMissing: {name}")

    # --- requests ------------------------------------------------------------------------------

    def apply(self, service: Obj) -> None:
        assert service["metadata"]["name"] == self.name
        template = service["spec"]["template"]
        traffic = service["spec"].get("traffic", [{"latestRevision": True, "percent": 100}])
        self._validate_name(template)
        self._validate_traffic(traffic)
        changed = template != self.template
        self.template = copy.deepcopy(template)
        self.traffic = copy.deepcopy(traffic)
        if changed:
            self.generation += 1
            self._reconcile_template()
        self._check_traffic()

    def patch_traffic(self, traffic: list[Obj]) -> None:
        self._validate_traffic(traffic)
        self.traffic = copy.deepcopy(traffic)
        self._check_traffic()

    # --- status --------------------------------------------------------------------------------

    def status_traffic(self) -> list[Obj]:
        return [
            {
                "revisionName": t.get("revisionName") or self.latest,
                "percent": int(t.get("percent", 0)),
                **({"tag": t["tag"]} if t.get("tag") else {}),
            }
            for t in self.traffic
        ]

    def tagged(self, tag: str) -> str | None:
        return next((t["revisionName"] for t in self.status_traffic() if t.get("tag") == tag), None)

    def split(self) -> dict[str, int]:
        """Percent of requests per revision."""
        shares: Counter[str] = Counter()
        for target in self.status_traffic():
            shares[target["revisionName"]] += target["percent"]
        return {name: share for name, share in shares.items() if share}

    def save(self, path: Path) -> None:
        """What `kubectl get ksvc -o json` would show of the status (for the kubectl stand-in)."""
        path.write_text(json.dumps({"status": {"traffic": self.status_traffic()}}))


def answer_jsonpath(state: Obj, expression: str) -> str:
    """The one query scripts/knative.sh makes:
    ``{.status.traffic[?(@.tag=="<tag>")].revisionName}``."""
    match = re.fullmatch(
        r'\{\.status\.traffic\[\?\(@\.tag=="([a-z-]+)"\)\]\.revisionName\}', expression
    )
    if match is None:
        raise ValueError(f"unsupported jsonpath {expression}")
    names = [t["revisionName"] for t in state["status"]["traffic"] if t.get("tag") == match[1]]
    return " ".join(names)
