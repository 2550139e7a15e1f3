"""JSON log lines carry the detection context."""

import json
import logging

from detection_api.logs import JsonFormatter


def test_json_lines_carry_ids_and_escape_messages() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, 'got "%s"', ("a\nb",), None)
    record.detection_id = "d-1"
    record.event_id = "e-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == 'got "a\nb"'
    assert entry["detection_id"] == "d-1"
    assert entry["event_id"] == "e-1"
    assert entry["level"] == "info"
    assert entry["ts"].endswith("+00:00")
