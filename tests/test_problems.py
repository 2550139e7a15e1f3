"""RFC 9457 problem bodies and field paths."""

from detection_api.app.problems import Problem, field_path, validation_errors


def test_field_paths_are_dotted_with_bracketed_indexes() -> None:
    assert field_path(("sensor_metadata", "pitch")) == "sensor_metadata.pitch"
    assert field_path(("pixel_x",), (3,)) == "[3].pixel_x"
    assert field_path(("bbox", 2)) == "bbox[2]"
    assert field_path(()) == "(body)"


def test_validation_errors_never_echo_the_input_value() -> None:
    errors = validation_errors(
        [{"loc": ("image_base64",), "msg": "too large", "input": "SECRET" * 10}]
    )
    assert errors == [{"path": "image_base64", "message": "too large"}]


def test_problem_body_has_the_rfc_9457_members() -> None:
    body = Problem(422, "geometry", "No ground", "ray above horizon", reason="x").body("/p")
    assert body == {
        "type": "urn:detection-api:problem:geometry",
        "title": "No ground",
        "status": 422,
        "detail": "ray above horizon",
        "instance": "/p",
        "reason": "x",
    }
