"""The dead-letter route's metric label: HTTP statuses as they are, anything else ``other``."""

from __future__ import annotations

import pytest

from detection_api.app.routes.dead_letters import error_code_label


@pytest.mark.parametrize("code", ["422", "500", "503", "000", "999"])
def test_an_http_status_is_its_own_label(code: str) -> None:
    assert error_code_label(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "",
        "50",
        "5000",
        "5x0",
        " 50",
        "٥٠٠",  # Arabic-Indic digits: str.isdigit takes them
        "５００",  # fullwidth digits, likewise
        "5²0",  # a superscript: also a digit to str.isdigit
    ],
)
def test_anything_else_is_other(code: str) -> None:
    assert error_code_label(code) == "other"
