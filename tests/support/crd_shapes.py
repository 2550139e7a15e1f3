"""Strict shapes of the custom resources the manifests use (Knative, KEDA, Prometheus Operator,
cert-manager, Flagger).

kubernetes-validate knows only core kinds and lets custom kinds through with a warning, so these
JSON Schemas say which fields each custom kind may have: every object is closed
(``additionalProperties: false``), so a misspelt or misplaced field fails. They are written for
this project (the subset of each CRD it can use, with Knative's default feature flags: no pod
securityContext, affinity, init containers, PVCs...), not copied from the upstream CRDs.
Deep validation of containers is done by kubernetes-validate on a synthesized Pod (see
tests/deployment/test_knative_render.py).
"""

from __future__ import annotations

from typing import Any

import jsonschema

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
ANY_OBJ: Schema = {"type": "object"}
STR_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
INT_OR_STR: Schema = {"type": ["integer", "string"]}
QUANTITIES: Schema = {"type": "object", "additionalProperties": INT_OR_STR}
DNS_LABEL: Schema = {
    "type": "string",
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    "maxLength": 63,
}
ISO8601_DURATION: Schema = {"type": "string", "pattern": r"^P(T(\d+(\.\d+)?[HMS])+|\d+D)$"}
PROM_DURATION: Schema = {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"}


def closed(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def array(items: Schema, min_items: int = 0) -> Schema:
    return {"type": "array", "items": items, "minItems": min_items}


def resource(api_version: str, kind: str, spec: Schema, spec_required: bool = True) -> Schema:
    required = (
        ("apiVersion", "kind", "metadata", "spec")
        if spec_required
        else ("apiVersion", "kind", "metadata")
    )
    return closed(
        required,
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=closed(
            ("name",), name=DNS_LABEL, namespace=STR, labels=STR_MAP, annotations=STR_MAP
        ),
        spec=spec,
    )


LABEL_SELECTOR = closed(
    matchLabels=STR_MAP,
    matchExpressions=array(closed(("key", "operator"), key=STR, operator=STR, values=array(STR))),
)

# --- Knative Serving ---------------------------------------------------------------------------

_PROBE_PORT = INT_OR_STR
PROBE = closed(
    httpGet=closed(
        path=STR,
        port=_PROBE_PORT,
        host=STR,
        scheme={"enum": ["HTTP", "HTTPS"]},
        httpHeaders=array(closed(("name", "value"), name=STR, value=STR)),
    ),
    tcpSocket=closed(port=_PROBE_PORT, host=STR),
    exec=closed(("command",), command=array(STR, 1)),
    grpc=closed(("port",), port=INT, service=STR),
    initialDelaySeconds=INT,
    periodSeconds=INT,
    timeoutSeconds=INT,
    successThreshold=INT,
    failureThreshold=INT,
)

CONTAINER_SECURITY_CONTEXT = closed(
    allowPrivilegeEscalation=BOOL,
    # capabilities.add needs the kubernetes.containerspec-addcapabilities flag: not allowed.
    capabilities=closed(drop=array(STR)),
    privileged={"const": False},
    readOnlyRootFilesystem=BOOL,
    runAsGroup=INT,
    runAsNonRoot=BOOL,
    runAsUser=INT,
    seccompProfile=closed(("type",), type=STR, localhostProfile=STR),
)

KNATIVE_CONTAINER = closed(
    ("image",),
    name=DNS_LABEL,
    image=STR,
    imagePullPolicy={"enum": ["Always", "IfNotPresent", "Never"]},
    command=array(STR),
    args=array(STR),
    workingDir=STR,
    env=array(ANY_OBJ),
    envFrom=array(ANY_OBJ),
    # Knative: one port per serving container, named http1 or h2c, TCP.
    ports=array(
        closed(
            ("containerPort",),
            name={"enum": ["http1", "h2c"]},
            containerPort=INT,
            protocol={"const": "TCP"},
        )
    ),
    resources=closed(limits=QUANTITIES, requests=QUANTITIES),
    livenessProbe=PROBE,
    readinessProbe=PROBE,
    startupProbe=PROBE,
    securityContext=CONTAINER_SECURITY_CONTEXT,
    terminationMessagePath=STR,
    terminationMessagePolicy=STR,
    volumeMounts=array(
        closed(("name", "mountPath"), name=STR, mountPath=STR, readOnly=BOOL, subPath=STR)
    ),
)

# Volume kinds Knative allows without feature flags (emptyDir is enabled by default).
KNATIVE_VOLUME = closed(
    ("name",),
    name=STR,
    secret=ANY_OBJ,
    configMap=ANY_OBJ,
    projected=ANY_OBJ,
    emptyDir=closed(medium=STR, sizeLimit=INT_OR_STR),
    # behind Knative's kubernetes.podspec-persistent-volume-claim flag (knative/components/dem)
    persistentVolumeClaim=closed(("claimName",), claimName=STR, readOnly=BOOL),
)

KNATIVE_REVISION_SPEC = closed(
    ("containers",),
    serviceAccountName=STR,
    automountServiceAccountToken=BOOL,
    enableServiceLinks=BOOL,
    imagePullSecrets=array(closed(("name",), name=STR)),
    containerConcurrency={"type": "integer", "minimum": 0, "maximum": 1000},
    timeoutSeconds={"type": "integer", "minimum": 1},
    responseStartTimeoutSeconds={"type": "integer", "minimum": 1},
    idleTimeoutSeconds={"type": "integer", "minimum": 1},
    containers=array(KNATIVE_CONTAINER, 1),
    volumes=array(KNATIVE_VOLUME),
)

TRAFFIC_TARGET = closed(
    tag=DNS_LABEL,
    revisionName=DNS_LABEL,
    configurationName=DNS_LABEL,
    latestRevision=BOOL,
    percent={"type": "integer", "minimum": 0, "maximum": 100},
    url=STR,
)

KNATIVE_SERVICE = resource(
    "serving.knative.dev/v1",
    "Service",
    closed(
        ("template",),
        template=closed(
            ("spec",),
            metadata=closed(name=DNS_LABEL, labels=STR_MAP, annotations=STR_MAP),
            spec=KNATIVE_REVISION_SPEC,
        ),
        traffic=array(TRAFFIC_TARGET, 1),
    ),
)

# --- Knative Eventing --------------------------------------------------------------------------

KREFERENCE = closed(
    ("apiVersion", "kind", "name"), apiVersion=STR, kind=STR, name=DNS_LABEL, namespace=STR
)
DESTINATION = {
    **closed(ref=KREFERENCE, uri=STR, CACerts=STR, audience=STR),
    "anyOf": [{"required": ["ref"]}, {"required": ["uri"]}],
}
DELIVERY = closed(
    retry={"type": "integer", "minimum": 0},
    backoffPolicy={"enum": ["linear", "exponential"]},
    backoffDelay=ISO8601_DURATION,
    deadLetterSink=DESTINATION,
)

BROKER = resource(
    "eventing.knative.dev/v1",
    "Broker",
    closed(config=KREFERENCE, delivery=DELIVERY),
    spec_required=False,  # a Broker with no spec takes the cluster's default class and channel
)

TRIGGER = resource(
    "eventing.knative.dev/v1",
    "Trigger",
    closed(
        ("broker", "subscriber"),
        broker=DNS_LABEL,
        filter=closed(attributes=STR_MAP),
        subscriber=DESTINATION,
        delivery=DELIVERY,
    ),
)

SINK_BINDING = resource(
    "sources.knative.dev/v1",
    "SinkBinding",
    closed(
        ("subject", "sink"),
        subject={
            **closed(
                ("apiVersion", "kind"),
                apiVersion=STR,
                kind=STR,
                name=STR,
                namespace=STR,
                selector=LABEL_SELECTOR,
            ),
            # One subject by name, or all that match a selector: not both, not neither.
            "oneOf": [{"required": ["name"]}, {"required": ["selector"]}],
        },
        sink=DESTINATION,
        ceOverrides=closed(extensions=STR_MAP),
    ),
)

# --- KEDA --------------------------------------------------------------------------------------

SCALED_OBJECT = resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    closed(
        ("scaleTargetRef", "triggers"),
        scaleTargetRef=closed(
            ("name",), apiVersion=STR, kind=STR, name=STR, envSourceContainerName=STR
        ),
        pollingInterval=INT,
        cooldownPeriod=INT,
        initialCooldownPeriod=INT,
        idleReplicaCount=INT,
        minReplicaCount={"type": "integer", "minimum": 0},
        maxReplicaCount={"type": "integer", "minimum": 1},
        fallback=closed(("failureThreshold", "replicas"), failureThreshold=INT, replicas=INT),
        advanced=closed(
            horizontalPodAutoscalerConfig=closed(name=STR, behavior=ANY_OBJ),
            restoreToOriginalReplicaCount=BOOL,
        ),
        triggers=array(
            closed(
                ("type", "metadata"),
                type=STR,
                name=STR,
                metadata=STR_MAP,
                authenticationRef=closed(("name",), name=STR, kind=STR),
                metricType={"enum": ["AverageValue", "Value", "Utilization"]},
                useCachedMetrics=BOOL,
            ),
            1,
        ),
    ),
)

TRIGGER_AUTHENTICATION = resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    closed(
        secretTargetRef=array(
            closed(("parameter", "name", "key"), parameter=STR, name=STR, key=STR)
        ),
        configMapTargetRef=array(
            closed(("parameter", "name", "key"), parameter=STR, name=STR, key=STR)
        ),
        env=array(closed(("parameter", "name"), parameter=STR, name=STR, containerName=STR)),
    ),
)

# --- Prometheus Operator -----------------------------------------------------------------------

POD_MONITOR = resource(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    closed(
        ("selector", "podMetricsEndpoints"),
        selector=LABEL_SELECTOR,
        namespaceSelector=closed(any=BOOL, matchNames=array(STR)),
        jobLabel=STR,
        podTargetLabels=array(STR),
        podMetricsEndpoints=array(
            closed(
                port=STR,
                portNumber=INT,
                path=STR,
                scheme={"enum": ["http", "https"]},
                interval=PROM_DURATION,
                scrapeTimeout=PROM_DURATION,
                honorLabels=BOOL,
                relabelings=array(ANY_OBJ),
                metricRelabelings=array(ANY_OBJ),
            ),
            1,
        ),
    ),
)

RULE = {
    **closed(
        ("expr",),
        alert=STR,
        record=STR,
        expr=STR,
        labels=STR_MAP,
        annotations=STR_MAP,
        keep_firing_for=PROM_DURATION,
        **{"for": PROM_DURATION},
    ),
    # A rule is an alert or a recording rule, never both.
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}

PROMETHEUS_RULE = resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    closed(
        ("groups",),
        groups=array(
            closed(
                ("name", "rules"),
                name=STR,
                interval=PROM_DURATION,
                labels=STR_MAP,
                rules=array(RULE, 1),
            ),
            1,
        ),
    ),
)

# --- Knative Serving: custom domains -------------------------------------------------------------

DNS_SUBDOMAIN: Schema = {
    "type": "string",
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "maxLength": 253,
}

# A DomainMapping is named after the host it publishes (detections.example.com): a DNS
# subdomain, not a label, so it gets its own metadata shape.
DOMAIN_MAPPING = closed(
    ("apiVersion", "kind", "metadata", "spec"),
    apiVersion={"const": "serving.knative.dev/v1beta1"},
    kind={"const": "DomainMapping"},
    metadata=closed(
        ("name",), name=DNS_SUBDOMAIN, namespace=STR, labels=STR_MAP, annotations=STR_MAP
    ),
    spec=closed(
        ("ref",),
        ref=closed(
            ("kind", "name"),
            apiVersion=STR,
            kind=STR,
            name=DNS_LABEL,
            namespace=STR,
            address=STR,
        ),
        tls=closed(("secretName",), secretName=DNS_SUBDOMAIN),
    ),
)

# knative.dev/networking config/domain-claim.yaml: cluster-scoped, named after the host, one
# required field. (kustomize gives it a namespace; the API server drops it.)
CLUSTER_DOMAIN_CLAIM = closed(
    ("apiVersion", "kind", "metadata", "spec"),
    apiVersion={"const": "networking.internal.knative.dev/v1alpha1"},
    kind={"const": "ClusterDomainClaim"},
    metadata=closed(
        ("name",), name=DNS_SUBDOMAIN, namespace=STR, labels=STR_MAP, annotations=STR_MAP
    ),
    spec=closed(("namespace",), namespace=DNS_LABEL),
)

# --- cert-manager -------------------------------------------------------------------------------

_SECRET_KEY_SELECTOR = closed(("name",), name=DNS_LABEL, key=STR)

CLUSTER_ISSUER = resource(
    "cert-manager.io/v1",
    "ClusterIssuer",
    closed(
        acme=closed(
            ("server", "privateKeySecretRef"),
            server={"type": "string", "pattern": r"^https://"},
            email=STR,
            privateKeySecretRef=_SECRET_KEY_SELECTOR,
            preferredChain=STR,
            profile=STR,
            skipTLSVerify={"const": False},
            solvers=array(
                closed(
                    selector=closed(dnsNames=array(STR), dnsZones=array(STR), matchLabels=STR_MAP),
                    http01=closed(
                        ingress=closed(
                            ingressClassName=STR,
                            serviceType={"enum": ["ClusterIP", "NodePort"]},
                            podTemplate=ANY_OBJ,
                            ingressTemplate=ANY_OBJ,
                        )
                    ),
                    dns01=ANY_OBJ,
                ),
                1,
            ),
        ),
        ca=closed(("secretName",), secretName=STR),
        selfSigned=closed(crlDistributionPoints=array(STR)),
    ),
)

# --- Flagger ------------------------------------------------------------------------------------

FLAGGER_DURATION: Schema = {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"}
_THRESHOLD_RANGE = {
    **closed(min={"type": "number"}, max={"type": "number"}),
    "minProperties": 1,
}

CANARY = resource(
    "flagger.app/v1beta1",
    "Canary",
    closed(
        ("targetRef", "analysis"),
        provider={"enum": ["knative", "kubernetes", "istio", "linkerd", "contour", "gloo"]},
        metricsServer={"type": "string", "pattern": r"^https?://"},
        progressDeadlineSeconds={"type": "integer", "minimum": 1},
        targetRef=closed(("apiVersion", "kind", "name"), apiVersion=STR, kind=STR, name=DNS_LABEL),
        skipAnalysis=BOOL,
        revertOnDeletion=BOOL,
        suspend=BOOL,
        analysis=closed(
            ("interval",),
            interval=FLAGGER_DURATION,
            threshold={"type": "integer", "minimum": 1},
            maxWeight={"type": "integer", "minimum": 1, "maximum": 100},
            stepWeight={"type": "integer", "minimum": 1, "maximum": 100},
            iterations={"type": "integer", "minimum": 1},
            metrics=array(
                {
                    **closed(
                        ("name",),
                        name=DNS_LABEL,
                        interval=FLAGGER_DURATION,
                        thresholdRange=_THRESHOLD_RANGE,
                        templateRef=closed(("name",), name=DNS_LABEL, namespace=STR),
                        templateVariables=STR_MAP,
                    ),
                    # Our own metrics only: every check names a MetricTemplate and a range.
                    "required": ["name", "templateRef", "thresholdRange", "interval"],
                },
                1,
            ),
            webhooks=array(
                closed(
                    ("name", "url"),
                    name=STR,
                    type={
                        "enum": [
                            "confirm-rollout",
                            "pre-rollout",
                            "rollout",
                            "confirm-promotion",
                            "post-rollout",
                            "event",
                            "rollback",
                            "confirm-traffic-increase",
                        ]
                    },
                    url=STR,
                    timeout=FLAGGER_DURATION,
                    metadata=STR_MAP,
                )
            ),
        ),
    ),
)

METRIC_TEMPLATE = resource(
    "flagger.app/v1beta1",
    "MetricTemplate",
    closed(
        ("provider", "query"),
        provider=closed(
            ("type", "address"),
            type={"const": "prometheus"},
            address={"type": "string", "pattern": r"^https?://"},
            secretRef=closed(("name",), name=DNS_LABEL),
            insecureSkipVerify={"const": False},
        ),
        query=STR,
    ),
)

SHAPES: dict[tuple[str, str], Schema] = {
    ("serving.knative.dev/v1", "Service"): KNATIVE_SERVICE,
    ("eventing.knative.dev/v1", "Broker"): BROKER,
    ("eventing.knative.dev/v1", "Trigger"): TRIGGER,
    ("sources.knative.dev/v1", "SinkBinding"): SINK_BINDING,
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "PodMonitor"): POD_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("serving.knative.dev/v1beta1", "DomainMapping"): DOMAIN_MAPPING,
    ("networking.internal.knative.dev/v1alpha1", "ClusterDomainClaim"): CLUSTER_DOMAIN_CLAIM,
    ("cert-manager.io/v1", "ClusterIssuer"): CLUSTER_ISSUER,
    ("flagger.app/v1beta1", "Canary"): CANARY,
    ("flagger.app/v1beta1", "MetricTemplate"): METRIC_TEMPLATE,
}


def shape_errors(obj: dict[str, Any]) -> list[str]:
    """Problems with a custom resource's fields ([] when it fits its shape)."""
    schema = SHAPES.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if schema is None:
        return [f"no shape for {obj.get('apiVersion')}/{obj.get('kind')}"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    ]
