"""``detection-api geolocate | cot | schema``: the core, from the command line.

Input is a JSON file (or ``-`` for stdin) holding one detection or a list. All detections are
validated and located before anything is printed: any invalid field or impossible geometry prints
``error: <field path>: <reason>`` lines on stderr and exits 2 with nothing on stdout.

``geolocate`` prints one JSON object per detection (a list for a list), ``cot`` one CoT event per
line, ``schema`` the JSON Schema of the payload. Ids: a detection's ``detection_id`` makes its
record id (and so a track-less CoT uid) reproducible across runs; without one a random id is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from detection_api.core import (
    CoreConfig,
    ProcessedDetection,
    geolocation_as_dict,
    process_detections,
)
from detection_api.geo.types import GeolocationError
from detection_api.model import Detection, detection_json_schema, parse_detection
from detection_api.settings import ConfigError, load_settings

EXIT_INVALID = 2
_CLI_NAMESPACE = uuid.UUID("0b6f1f5e-4d0e-5b9a-8a53-2f2f6f0c9d41")


class InputError(Exception):
    """Input the command cannot use; each line is one ``<path>: <reason>``."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _read_json(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise InputError([f"{name}: not UTF-8 text"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        label = "stdin" if name == "-" else name
        raise InputError(
            [f"{label}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"]
        ) from None


def _field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "detection"


def _message(error: dict[str, Any]) -> str:
    # pydantic prefixes messages of our own validators with "Value error, ".
    return str(error["msg"]).removeprefix("Value error, ")


def _record_id(detection_id: str | None, source: str | None) -> str:
    if detection_id is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_CLI_NAMESPACE, f"{source or ''}\x1f{detection_id}").hex


def _process_all(payload: Any, config: CoreConfig) -> list[ProcessedDetection]:
    items = payload if isinstance(payload, list) else [payload]
    is_list = isinstance(payload, list)
    errors: list[tuple[int, str]] = []  # (item index, line): reported in input order
    valid: list[tuple[int, Detection]] = []
    for index, item in enumerate(items):
        prefix = f"detection[{index}]" if is_list else ""
        if not isinstance(item, dict):
            errors.append((index, f"{prefix or 'detection'}: must be a JSON object"))
            continue
        try:
            valid.append((index, parse_detection(item, max_image_bytes=config.max_image_bytes)))
        except ValidationError as exc:
            errors.extend(
                (index, f"{_field_path(prefix, tuple(e['loc']))}: {_message(e)}")
                for e in exc.errors(include_url=False)
            )
    detections = [det for _, det in valid]
    record_ids = [_record_id(det.detection_id, det.source) for det in detections]
    outcomes = process_detections(
        detections,
        config,
        record_ids=record_ids,
        detection_ids=[
            det.detection_id or record_id
            for det, record_id in zip(detections, record_ids, strict=True)
        ],
    )
    results: list[ProcessedDetection] = []
    for (index, _), outcome in zip(valid, outcomes, strict=True):
        if isinstance(outcome, GeolocationError):
            prefix = f"detection[{index}]" if is_list else "detection"
            errors.append((index, f"{prefix}: geometry impossible: {outcome}"))
        else:
            results.append(outcome)
    if errors:
        errors.sort(key=lambda error: error[0])  # stable: an item's own lines keep their order
        raise InputError([line for _, line in errors])
    return results


def _geolocate_output(result: ProcessedDetection) -> dict[str, Any]:
    return {
        "detection_id": result.detection_id,
        "record_id": result.record_id,
        "uid": result.uid,
        "cot_type": result.cot_type,
        **geolocation_as_dict(result.geolocation),
    }


def _configuration() -> CoreConfig:
    try:
        return CoreConfig.from_settings(load_settings())
    except ConfigError as exc:  # an environment variable, not the input (one line)
        raise InputError([f"configuration: {exc}".replace("invalid configuration: ", "")]) from None
    except ValueError as exc:  # COT_TYPE_MAP or the ce90 cut-offs
        raise InputError([f"configuration: {exc}"]) from None


def run(args: argparse.Namespace) -> int:
    if args.verb == "schema":
        return _emit(json.dumps(detection_json_schema(), indent=2, ensure_ascii=False) + "\n")
    try:
        config = _configuration()
        payload = _read_json(args.file)
        results = _process_all(payload, config)
    except InputError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INVALID

    if args.verb == "cot":
        return _emit("".join(f"{r.cot_xml}\n" for r in results))
    outputs = [_geolocate_output(r) for r in results]
    return _emit(json.dumps(outputs if isinstance(payload, list) else outputs[0], indent=2) + "\n")


def _emit(text: str) -> int:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # A reader such as `head` stopped early: not our error. Point stdout at devnull so the
        # interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
