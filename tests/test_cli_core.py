"""``detection-api geolocate | cot | schema`` run as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lxml import etree

from detection_api.settings import environment_names

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPT = Path(sys.executable).with_name("detection-api")


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None):
    # The settings come from the environment: start from one without the application's names.
    clean = {k: v for k, v in os.environ.items() if k.upper() not in environment_names()}
    clean.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )


def ok(*args: str, **kwargs: Any) -> str:
    result = cli(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(*args: str, **kwargs: Any) -> str:
    result = cli(*args, **kwargs)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    return result.stderr


def example(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text())


GEOLOCATE_KEYS = {
    "detection_id",
    "record_id",
    "uid",
    "cot_type",
    "lat",
    "lon",
    "hae_m",
    "slant_range_m",
    "ground_distance_m",
    "ce90_m",
    "le90_m",
    "ce_m",
    "le_m",
    "flag",
    "covariance_en_m2",
    "terrain",
}


def test_script_is_installed() -> None:
    assert SCRIPT.is_file()


def test_geolocate_one_detection() -> None:
    out = json.loads(ok("geolocate", str(EXAMPLES / "detection.json")))
    assert set(out) == GEOLOCATE_KEYS
    assert out["detection_id"] == "drone-7-000142"
    assert out["cot_type"] == "a-u-G-E-V"
    assert out["uid"] == f"detection-api.{out['record_id']}"
    assert out["hae_m"] == 177.0
    # The drone at 51.2185312,-1.8052475 looks south-east: the hit is south-east of it.
    assert out["lat"] < 51.2185312
    assert out["lon"] > -1.8052475
    assert 100 < out["ground_distance_m"] < out["slant_range_m"] < 250
    assert out["ce_m"] == pytest.approx(out["ce90_m"] / 2.1460, abs=2e-3)
    assert out["le_m"] == pytest.approx(out["le90_m"] / 1.6449, abs=2e-3)
    assert out["flag"] in {"GREEN", "YELLOW", "RED"}


def test_geolocate_is_reproducible_for_detections_with_ids() -> None:
    first = json.loads(ok("geolocate", str(EXAMPLES / "detection.json")))
    second = json.loads(ok("geolocate", str(EXAMPLES / "detection.json")))
    assert first == second


def test_geolocate_a_list_gives_a_list_in_order() -> None:
    out = json.loads(ok("geolocate", str(EXAMPLES / "batch.json")))
    assert isinstance(out, list)
    assert [o["detection_id"] for o in out] == ["mast-3-000917", "drone-7-000143", "mast-3-000918"]
    assert [o["cot_type"] for o in out] == ["a-u-G", "a-u-G-E-V", "a-u-G-E-V"]
    assert out[1]["uid"] == "detection-api.drone-7-gimbal.track.42"
    assert all(set(o) == GEOLOCATE_KEYS for o in out)


def test_geolocate_from_stdin_and_v1_payload() -> None:
    text = (EXAMPLES / "v1-detection.json").read_text()
    out = json.loads(ok("geolocate", "-", stdin=text))
    assert out["hae_m"] == 0.0  # v1 has no ground_elevation: the ground is the ellipsoid
    assert out["detection_id"] == out["record_id"]  # generated
    assert json.loads(ok("geolocate", stdin=text))["lat"] == out["lat"]  # '-' is the default


def test_cot_prints_one_event_per_line() -> None:
    lines = ok("cot", str(EXAMPLES / "batch.json")).splitlines()
    assert len(lines) == 3
    geolocated = json.loads(ok("geolocate", str(EXAMPLES / "batch.json")))
    for line, geo in zip(lines, geolocated, strict=True):
        root = etree.fromstring(line.encode())
        assert root.tag == "event"
        assert root.get("version") == "2.0"
        assert root.get("how") == "m-i"
        assert root.get("uid") == geo["uid"]
        assert root.get("type") == geo["cot_type"]
        assert root.find("point").get("lat") == f"{geo['lat']:.7f}"


def test_cot_type_map_from_the_environment() -> None:
    env = {"COT_TYPE_MAP": '{"person": "a-u-G-U-C-I"}', "COT_STALE_SECONDS": "60"}
    out = json.loads(ok("geolocate", str(EXAMPLES / "batch.json"), env=env))
    assert out[0]["cot_type"] == "a-u-G-U-C-I"


def test_schema_is_the_payload_json_schema() -> None:
    schema = json.loads(ok("schema"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(example("detection.json"))
    broken = example("detection.json")
    del broken["sensor_metadata"]["heading"]
    assert list(validator.iter_errors(broken))


def test_invalid_field_is_named_and_exits_2() -> None:
    data = example("detection.json")
    data["sensor_metadata"]["heading"] = 400
    err = fails("geolocate", "-", stdin=json.dumps(data))
    assert err.startswith("error: sensor_metadata.heading: ")
    assert "360" in err


def test_invalid_item_of_a_list_is_named_by_index() -> None:
    data = example("batch.json")
    del data[2]["bbox"]
    data[1]["timestamp"] = "2026-11-26T14:05:09"
    err = fails("cot", "-", stdin=json.dumps(data))
    assert "error: detection[1].timestamp: " in err
    assert "error: detection[2].pixel_x: pixel_x is required unless bbox is given" in err


def test_nan_in_json_is_refused() -> None:
    text = (EXAMPLES / "detection.json").read_text().replace("1184.5", "NaN")
    assert "error: pixel_x: " in fails("geolocate", "-", stdin=text)


def test_geometry_impossibility_names_the_reason() -> None:
    data = example("detection.json")
    data["sensor_metadata"]["pitch"] = 20.0  # the pixel is 8 deg below the axis: ray upwards
    err = fails("geolocate", "-", stdin=json.dumps(data))
    assert "geometry impossible" in err
    assert "ray_above_horizon" in err


def test_beyond_max_range_from_the_environment() -> None:
    err = fails("cot", str(EXAMPLES / "detection.json"), env={"MAX_RANGE_M": "50"})
    assert "beyond_max_range" in err


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("{not json", "error: stdin: invalid JSON at line 1 column 2"),
        ("[1, 2]", "error: detection[0]: must be a JSON object"),
        ('"text"', "error: detection: must be a JSON object"),
    ],
)
def test_unusable_input(stdin: str, expected: str) -> None:
    assert expected in fails("geolocate", "-", stdin=stdin)


def test_missing_file() -> None:
    assert "cannot read" in fails("geolocate", str(EXAMPLES / "no-such-file.json"))


def test_bad_configuration_exits_2() -> None:
    err = fails("geolocate", str(EXAMPLES / "detection.json"), env={"COT_TYPE_MAP": "[1]"})
    assert "error: configuration: COT_TYPE_MAP" in err
    err = fails("geolocate", str(EXAMPLES / "detection.json"), env={"COT_STALE_SECONDS": "0"})
    assert "error: configuration: COT_STALE_SECONDS" in err


def test_empty_list_gives_empty_output() -> None:
    assert json.loads(ok("geolocate", "-", stdin="[]")) == []
    assert ok("cot", "-", stdin="[]") == ""


def test_core_verbs_import_no_web_or_queue_stack() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from detection_api.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['cot', {str(EXAMPLES / 'batch.json')!r}]) == 0\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'flask', 'redis', 'rq', 'functions_framework',\n"
        "                       'cloudevents', 'prometheus_client'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
