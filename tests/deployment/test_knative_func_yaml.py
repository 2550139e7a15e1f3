"""func.yaml is a valid func 0.36.0 descriptor and says the same as knative/ and deploy.mk; the
Procfile starts processes the code provides."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import shlex
from typing import Any

import jsonschema
import yaml

from detection_api import cli
from support import k8s_render as k8s
from support.crd_shapes import STR, array, closed

FUNC_YAML = k8s.REPO / "func.yaml"
QUANTITY = {"type": "string", "pattern": r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"}
ENV = closed(name={"type": "string", "pattern": r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"}, value=STR)
# The fields of func's specVersion 0.36.0 schema that this project uses, closed like the original.
FUNC_SCHEMA = closed(
    ("specVersion", "created", "name", "runtime", "build", "run", "deploy"),
    specVersion={"const": "0.36.0"},
    name={"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
    runtime=STR,
    registry=STR,
    image=STR,
    namespace=STR,
    created=STR,
    invoke={"enum": ["http", "cloudevent"]},
    build=closed(
        ("builder",),
        builder={"enum": ["pack", "s2i"]},
        builderImages={"type": "object", "additionalProperties": STR},
        buildEnvs=array(ENV),
    ),
    run=closed(
        envs=array(ENV),
        volumes=array(
            closed(
                ("path",),
                path=STR,
                secret=STR,
                configMap=STR,
                emptyDir=closed(medium=STR, sizeLimit=STR),
            )
        ),
    ),
    deploy=closed(
        namespace=STR,
        serviceAccountName=STR,
        labels=array(
            closed(
                ("key",),
                key={"type": "string", "pattern": r"^([a-z0-9.-]+/)?[A-Za-z0-9][-A-Za-z0-9_.]*$"},
                value={"type": "string", "pattern": r"^([A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9])?$"},
            )
        ),
        # func copies these onto the Service too, where Knative refuses autoscaling.knative.dev/*.
        annotations={
            "type": "object",
            "propertyNames": {"not": {"pattern": "^autoscaling\\.knative\\.dev/"}},
            "additionalProperties": STR,
        },
        healthEndpoints=closed(liveness=STR, readiness=STR),
        options=closed(
            scale=closed(
                min={"type": "integer", "minimum": 0},
                max={"type": "integer", "minimum": 0},
                metric={"enum": ["concurrency", "rps"]},
                target={"type": "number", "minimum": 0},
                utilization={"type": "number", "minimum": 1, "maximum": 100},
            ),
            resources=closed(
                requests=closed(cpu=QUANTITY, memory=QUANTITY),
                limits=closed(
                    cpu=QUANTITY, memory=QUANTITY, concurrency={"type": "integer", "minimum": 0}
                ),
            ),
        ),
        subscriptions=array(
            closed(("source",), source=STR, filters={"type": "object", "additionalProperties": STR})
        ),
    ),
)
SECRET_REF = re.compile(r"^\{\{\s*secret:([^:}\s]+):([^:}\s]+)\s*\}\}$")
CONFIG_MAP_REF = re.compile(r"^\{\{\s*configMap:([^:}\s]+)\s*\}\}$")


def func_yaml() -> dict[str, Any]:
    data = yaml.safe_load(FUNC_YAML.read_text())
    created = data.get("created")
    if isinstance(created, dt.datetime):  # YAML timestamps load as datetimes
        data["created"] = created.isoformat()
    return data


def make_defaults() -> dict[str, str]:
    text = (k8s.REPO / "deploy.mk").read_text()
    return dict(re.findall(r"^([A-Z_]+)\s*\?=[ \t]*(.*?)\s*$", text, re.MULTILINE))


def function() -> dict[str, Any]:
    return k8s.function_service(k8s.bundle("prod"))


def test_func_yaml_fits_the_func_schema() -> None:
    data = func_yaml()
    jsonschema.Draft202012Validator(FUNC_SCHEMA).validate(data)
    created = dt.datetime.fromisoformat(data["created"])
    assert created.tzinfo is not None


def test_func_yaml_schema_rejects_annotations_for_autoscaling() -> None:
    data = func_yaml()
    data["deploy"]["annotations"] = {"autoscaling.knative.dev/min-scale": "0"}
    data["deploy"]["options"]["scale"]["window"] = "60s"
    errors = list(jsonschema.Draft202012Validator(FUNC_SCHEMA).iter_errors(data))
    assert len(errors) == 2


def test_func_yaml_scales_like_the_knative_service() -> None:
    scale = func_yaml()["deploy"]["options"]["scale"]
    annotations = function()["spec"]["template"]["metadata"]["annotations"]
    prefix = "autoscaling.knative.dev/"
    assert scale == {
        "min": int(annotations[prefix + "min-scale"]),
        "max": int(annotations[prefix + "max-scale"]),
        "metric": annotations[prefix + "metric"],
        "target": int(annotations[prefix + "target"]),
        "utilization": int(annotations[prefix + "target-utilization-percentage"]),
    }


def test_func_yaml_resources_probes_and_account_match() -> None:
    data = func_yaml()
    spec = function()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    resources = data["deploy"]["options"]["resources"]
    limits = dict(resources["limits"])
    assert limits.pop("concurrency") == spec["containerConcurrency"]
    assert {"requests": resources["requests"], "limits": limits} == container["resources"]
    assert data["deploy"]["healthEndpoints"] == {
        "liveness": container["livenessProbe"]["httpGet"]["path"],
        "readiness": container["readinessProbe"]["httpGet"]["path"],
    }
    assert data["deploy"]["serviceAccountName"] == spec["serviceAccountName"]
    assert data["deploy"]["namespace"] == data["namespace"] == function()["metadata"]["namespace"]
    assert data["name"] == function()["metadata"]["name"]


def test_func_yaml_env_matches_the_knative_service() -> None:
    (container,) = function()["spec"]["template"]["spec"]["containers"]
    expected_literals = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    expected_secrets = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    expected_maps = {s["configMapRef"]["name"] for s in container["envFrom"]}
    literals, secrets, maps = {}, {}, set()
    for env in func_yaml()["run"]["envs"]:
        value = env["value"]
        if match := SECRET_REF.match(value):
            secrets[env["name"]] = match.groups()
        elif match := CONFIG_MAP_REF.match(value):
            assert "name" not in env  # the whole ConfigMap, as envFrom
            maps.add(match.group(1))
        else:
            literals[env["name"]] = value
    assert (literals, secrets, maps) == (expected_literals, expected_secrets, expected_maps)


def test_func_yaml_mounts_tmp_like_the_knative_service() -> None:
    spec = function()["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    func_volumes = {v["path"]: v for v in func_yaml()["run"]["volumes"]}
    assert set(func_volumes) == set(mounts)
    for path, volume in func_volumes.items():
        assert volume["emptyDir"] == mounts[path]["emptyDir"]


def func_overlay() -> list[dict[str, Any]]:
    return k8s.render(k8s.KNATIVE / "overlays" / "func")


def test_the_func_overlay_is_prod_without_the_function_service() -> None:
    """func creates the Knative Service; everything else, the Trigger included, is prod's."""
    prod, func = k8s.bundle("prod"), func_overlay()
    assert not [o for o in func if (o["apiVersion"], o["kind"]) == k8s.KNATIVE_SERVICE]
    assert [o for o in prod if o not in func] == [k8s.function_service(prod)]


def test_func_yaml_subscribes_through_the_overlays_trigger() -> None:
    """func's own Trigger has no retries and no dead-letter sink and would deliver every event a
    second time: func.yaml declares none, and the overlay's Trigger names the Service func makes."""
    assert "subscriptions" not in func_yaml()["deploy"]
    trigger = k8s.find(func_overlay(), "Trigger", "detection-created")["spec"]
    assert trigger["subscriber"]["ref"]["name"] == func_yaml()["name"]
    assert trigger["delivery"]["retry"] > 0
    assert trigger["delivery"]["deadLetterSink"]["uri"] == "/dead-letters"


def test_func_yaml_labels_and_annotations_keep_the_policies_and_quota_working() -> None:
    """func replaces the revision template's labels and annotations with func.yaml's: the pods
    must keep every label the NetworkPolicies select them by, and queue-proxy's resources."""
    labels = {item["key"]: item.get("value") for item in func_yaml()["deploy"]["labels"]}
    template = function()["spec"]["template"]["metadata"]
    assert template["labels"].items() <= labels.items()
    for policy in k8s.of_kind(func_overlay(), "networking.k8s.io/v1", "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        wanted = selector.get("matchLabels", {})
        if wanted and wanted.get("app.kubernetes.io/name") == "detection-api":
            assert wanted.items() <= labels.items(), policy["metadata"]["name"]
    queue_proxy = {
        k: v for k, v in template["annotations"].items() if k.startswith("queue.sidecar.")
    }
    assert queue_proxy
    assert func_yaml()["deploy"]["annotations"] == queue_proxy


def test_the_readme_gives_working_func_commands() -> None:
    """func refuses `--image <digest>` with its default --push=true."""
    text = k8s.readme_section("Deployment on Knative")
    commands = [line for line in text.splitlines() if "func deploy" in line]
    assert commands
    for line in commands:
        if "@sha256:" in line:
            assert "--push=false" in line and "--build=false" in line, line
    assert "kubectl apply -k knative/overlays/func" in text


def test_func_yaml_builds_like_make_build() -> None:
    data, defaults = func_yaml(), make_defaults()
    assert data["build"]["builder"] == "pack"
    assert data["build"]["builderImages"]["pack"] == defaults["BUILDER"]
    assert {e["name"]: e["value"] for e in data["build"]["buildEnvs"]} == {
        "BP_CPYTHON_VERSION": defaults["PYTHON_VERSION"]
    }
    assert data["image"].rsplit(":", 1)[0] == defaults["IMAGE"]
    assert data["image"].startswith(data["registry"] + "/")


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (k8s.REPO / "Procfile").read_text().splitlines():
        if line.strip():
            name, _, command = line.partition(":")
            entries[name.strip()] = shlex.split(command)
    return entries


def test_procfile_web_serves_the_function_on_port() -> None:
    web = procfile()["web"]
    assert web[0] == "functions-framework"
    options = dict(zip(web[1::2], web[2::2], strict=True))
    assert options["--port"] == "$PORT"  # Knative sets PORT
    assert options["--signature-type"] == "http"
    source = k8s.REPO / options["--source"]
    spec = importlib.util.spec_from_file_location("procfile_main", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, options["--target"]))


def test_procfile_worker_is_the_forwarder_verb() -> None:
    assert set(procfile()) == {"web", "worker"}
    program, *args = procfile()["worker"]
    assert program == "detection-api"
    parsed = cli.build_parser().parse_args(args)
    module = f"detection_api.commands.{cli._VERB_MODULES[parsed.verb]}"
    assert importlib.util.find_spec(module) is not None, module


def test_func_yaml_is_cluster_local_like_the_knative_service() -> None:
    labels = {item["key"]: item.get("value") for item in func_yaml()["deploy"]["labels"]}
    service_labels = function()["metadata"].get("labels", {})
    key = "networking.knative.dev/visibility"
    assert labels[key] == service_labels[key] == "cluster-local"
