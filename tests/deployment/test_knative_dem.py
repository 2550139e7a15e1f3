"""knative/components/dem: DEM tiles reach the function's pods on a read-only volume."""

from __future__ import annotations

from typing import Any

from detection_api.settings import Settings
from support import k8s_render as k8s


def function_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (service,) = [
        o
        for o in objs
        if (o["apiVersion"], o["kind"]) == k8s.KNATIVE_SERVICE
        and o["metadata"]["name"] == k8s.FUNCTION_SERVICE_NAME
    ]
    return service["spec"]["template"]["spec"]


def test_the_dem_volume_is_mounted_read_only_where_dem_path_points() -> None:
    objs = k8s.render_component("dem")
    pod = function_pod(objs)
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["DEM_PATH"]]
    assert mount["readOnly"] is True
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    assert claim["readOnly"] is True
    (pvc,) = [
        o
        for o in objs
        if o["kind"] == "PersistentVolumeClaim" and o["metadata"]["name"] == claim["claimName"]
    ]
    assert pvc["metadata"]["namespace"] == "detection-api"
    # the settings the function reads accept these values (DEM_PATH itself exists only in a pod)
    settings = Settings(
        dem_vertical_datum=env["DEM_VERTICAL_DATUM"], dem_sigma_m=env["DEM_SIGMA_M"]
    )
    assert settings.dem_vertical_datum == "geoid" and settings.dem_sigma_m == 5.0


def test_nothing_is_downloaded_when_a_pod_starts() -> None:
    """Scale-from-zero must not fetch gigabytes: no init containers, no download URL anywhere."""
    pod = function_pod(k8s.render_component("dem"))
    assert "initContainers" not in pod
    assert "http" not in str(pod["containers"][0].get("env", [])).lower()


def test_only_the_function_gets_the_dem_and_memory_for_its_tiles() -> None:
    with_dem = k8s.render_component("dem")
    base = k8s.render(k8s.KNATIVE / "base")
    forwarder = [
        o
        for o in with_dem
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "tak-forwarder"
    ]
    assert "DEM_PATH" not in str(forwarder)
    limits = function_pod(with_dem)["containers"][0]["resources"]["limits"]["memory"]
    base_limits = function_pod(base)["containers"][0]["resources"]["limits"]["memory"]
    assert (limits, base_limits) == ("1Gi", "512Mi")
