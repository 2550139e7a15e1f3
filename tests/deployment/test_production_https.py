"""HTTPS exposure: the Services are cluster-local, a DomainMapping publishes the function on one
public host with a cert-manager certificate, and the cluster-wide pieces (ClusterIssuers, the
Knative settings) are consistent. Which paths that host serves is documented, route by route."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import redis
import yaml

from detection_api.app.http_app import create_app
from detection_api.settings import Settings
from support import k8s_render as k8s
from support.crd_shapes import shape_errors

VISIBILITY = "networking.knative.dev/visibility"
CLUSTER_SETUP = k8s.KNATIVE / "components" / "https" / "cluster-setup"
DOC_TEXT = k8s.readme_section("Production readiness")
WITH_HTTPS = ("prod", "prod-managed-redis", "prod-flagger", "base+https")
LETSENCRYPT = {
    "letsencrypt-prod": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
SOLVER_PORT = 8089  # cert-manager's acmesolver
SOLVER_LABEL = "acme.cert-manager.io/http01-solver"


def domain_mappings(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == "DomainMapping"]


def exposure_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Every Knative Service is cluster-local and every DomainMapping names one of them; cluster
    events are trusted only by a cluster-local Service (a public route would let a client name
    the cluster-local host in K-Original-Host, which queue-proxy turns into the Host)."""
    problems = []
    services = {s["metadata"]["name"]: s for s in k8s.of_kind(objs, *k8s.KNATIVE_SERVICE)}
    for name, service in services.items():
        if service["metadata"].get("labels", {}).get(VISIBILITY) != "cluster-local":
            problems.append(f"Service/{name} is not cluster-local")
    for mapping in domain_mappings(objs):
        ref = mapping["spec"]["ref"]
        kind = (ref.get("apiVersion"), ref["kind"])
        if kind != k8s.KNATIVE_SERVICE or ref["name"] not in services:
            problems.append(f"DomainMapping/{mapping['metadata']['name']} targets {ref}")
        if "tls" in mapping["spec"]:
            problems.append("the DomainMapping brings its own secret: no automatic renewal")
    function = services.get(k8s.FUNCTION_SERVICE_NAME, {})
    public = function.get("metadata", {}).get("labels", {}).get(VISIBILITY) != "cluster-local"
    for obj in objs:
        data = obj.get("data", {}) if obj["kind"] == "ConfigMap" else {}
        if public and data.get("AUTH_TRUST_CLUSTER_EVENTS", "false").lower() == "true":
            problems.append(
                "AUTH_TRUST_CLUSTER_EVENTS=true on a public Service: clients can pose as the Broker"
            )
    return problems


@pytest.mark.parametrize("name", WITH_HTTPS)
def test_only_the_domain_mapping_is_public(name: str) -> None:
    objs = k8s.bundle(name)
    (mapping,) = domain_mappings(objs)
    assert mapping["spec"]["ref"]["name"] == k8s.FUNCTION_SERVICE_NAME
    assert exposure_problems(objs) == []


def test_prod_publishes_the_site_host() -> None:
    (mapping,) = domain_mappings(k8s.bundle("prod"))
    assert mapping["metadata"]["name"] == "detections.example.com"
    assert mapping["metadata"]["namespace"] == "detection-api"


@pytest.mark.parametrize("name", WITH_HTTPS)
def test_acme_solver_pods_are_reachable_from_the_gateway_only(name: str) -> None:
    policies = [
        o
        for o in k8s.bundle(name)
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"].get("matchLabels", {}).get(SOLVER_LABEL) == "true"
    ]
    (policy,) = policies
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": SOLVER_PORT}]
    (source,) = rule["from"]
    assert "podSelector" not in source
    (expression,) = source["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["values"] == ["kourier-system"]


def test_cluster_setup_has_letsencrypt_prod_and_staging_over_http01() -> None:
    issuers = {
        o["metadata"]["name"]: o for o in k8s.render_stack(("components/https/cluster-setup",))
    }
    assert set(issuers) == set(LETSENCRYPT)
    for name, issuer in issuers.items():
        assert issuer["kind"] == "ClusterIssuer"
        assert "namespace" not in issuer["metadata"]  # cluster-scoped
        assert shape_errors(issuer) == []
        acme = issuer["spec"]["acme"]
        assert acme["server"] == LETSENCRYPT[name]
        # Knative recognises HTTP-01 only when it is the first solver.
        assert "http01" in acme["solvers"][0]
        assert issuer["metadata"]["labels"]["detection-api.io/retain"] == "true"
    keys = {i["spec"]["acme"]["privateKeySecretRef"]["name"] for i in issuers.values()}
    assert len(keys) == 2  # one ACME account key each


def load_patch(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER_SETUP / name).read_text())


def test_knative_settings_point_at_a_shipped_issuer_and_redirect_http() -> None:
    certmanager = load_patch("config-certmanager.patch.yaml")
    assert set(certmanager) == {"data"}
    issuer_ref = yaml.safe_load(certmanager["data"]["issuerRef"])
    assert issuer_ref == {"kind": "ClusterIssuer", "name": "letsencrypt-prod"}
    network = load_patch("config-network.patch.yaml")
    assert set(network) == {"data"}
    assert network["data"]["external-domain-tls"] == "Enabled"
    assert network["data"]["http-protocol"] == "Redirected"
    assert network["data"]["ingress-class"] == "kourier.ingress.networking.knative.dev"
    # Patched, not applied: the kustomization must not carry Knative's own ConfigMaps.
    kinds = {o["kind"] for o in k8s.render_stack(("components/https/cluster-setup",))}
    assert kinds == {"ClusterIssuer"}


def test_the_doc_gives_the_exact_patch_commands() -> None:
    text = DOC_TEXT
    for name in ("config-certmanager", "config-network"):
        assert (
            f"kubectl patch configmap {name} -n knative-serving --type merge --patch-file "
            f"knative/components/https/cluster-setup/{name}.patch.yaml"
        ) in text.replace("\\\n  ", "")
    assert "kubectl apply -k knative/components/https/cluster-setup" in text


# --- which paths the public host serves ---------------------------------------------------------


def app_routes() -> set[str]:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", jwt_secret_key="k" * 32)
    app = create_app(settings, redis.Redis.from_url(settings.redis_url.get_secret_value()))
    # Flask's default static route serves nothing here (no static folder).
    return {r.rule for r in app.url_map.iter_rules() if not r.rule.startswith("/static")}


def documented_exposure() -> dict[str, str]:
    """The exposure table of the README's Production readiness section: path -> public?"""
    text = DOC_TEXT
    table = text[text.index("| path |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`").split(" ", 1)[-1]] = cells[1]
    return rows


def test_every_route_of_the_function_is_in_the_exposure_table() -> None:
    routes = app_routes()
    table = documented_exposure()
    assert routes <= set(table), routes - set(table)
    assert table["/metrics"].startswith("never")
    assert table["/api/v1/detections"].startswith("public")
    assert table["/openapi.json"].startswith("public")


# --- the checks themselves can fail ------------------------------------------------------------


def test_exposure_checks_catch_a_public_service_and_a_trusting_config() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    k8s.function_service(objs)["metadata"]["labels"].pop(VISIBILITY)
    config = k8s.find(objs, "ConfigMap", "detection-api-config")
    assert config["data"]["AUTH_TRUST_CLUSTER_EVENTS"] == "true"
    (mapping,) = domain_mappings(objs)
    mapping["spec"]["ref"]["name"] = "elsewhere"
    problems = exposure_problems(objs)
    assert any("detection-api is not cluster-local" in p for p in problems)
    assert any("AUTH_TRUST_CLUSTER_EVENTS" in p for p in problems)
    assert any("targets" in p for p in problems)


def test_domain_mapping_shape_rejects_a_misplaced_field() -> None:
    (mapping,) = copy.deepcopy(domain_mappings(k8s.bundle("prod")))
    mapping["spec"]["ref"]["port"] = 80
    mapping["metadata"]["name"] = "Detections.Example.com"
    errors = shape_errors(mapping)
    assert any("port" in e for e in errors)
    assert any("metadata.name" in e for e in errors)


@pytest.mark.parametrize("name", k8s.BUNDLE_NAMES)
def test_every_bundle_that_trusts_cluster_events_is_cluster_local(name: str) -> None:
    objs = k8s.bundle(name)
    service = k8s.function_service(objs)
    config = k8s.find(objs, "ConfigMap", "detection-api-config")
    if config["data"].get("AUTH_TRUST_CLUSTER_EVENTS", "false").lower() == "true":
        assert service["metadata"]["labels"][VISIBILITY] == "cluster-local"


@pytest.mark.parametrize("name", WITH_HTTPS)
def test_the_public_host_is_claimed_for_the_namespace(name: str) -> None:
    """Without a ClusterDomainClaim for its host (or autocreate-cluster-domain-claims, off by
    default) the DomainMapping is DomainClaimNotOwned and never Ready."""
    objs = k8s.bundle(name)
    (mapping,) = domain_mappings(objs)
    claims = [o for o in objs if o["kind"] == "ClusterDomainClaim"]
    assert claim_problems(mapping, claims) == []
    assert shape_errors(claims[0]) == []


def claim_problems(mapping: dict[str, Any], claims: list[dict[str, Any]]) -> list[str]:
    host, namespace = mapping["metadata"]["name"], mapping["metadata"]["namespace"]
    owners = [c["spec"]["namespace"] for c in claims if c["metadata"]["name"] == host]
    if owners != [namespace]:
        return [f"{host} is claimed for {owners}, not [{namespace!r}]"]
    return []


def test_claim_check_catches_a_renamed_host() -> None:
    objs = copy.deepcopy(k8s.bundle("prod"))
    (mapping,) = domain_mappings(objs)
    claims = [o for o in objs if o["kind"] == "ClusterDomainClaim"]
    mapping["metadata"]["name"] = "api.example.org"
    assert claim_problems(mapping, claims)
