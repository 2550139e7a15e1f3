"""``GET /openapi.json``: the OpenAPI 3.1 document, serialised once."""

from __future__ import annotations

import json
from functools import cache

from flask import Blueprint, Response

from detection_api.app.openapi import openapi_document

blueprint = Blueprint("docs", __name__)


@cache
def _document() -> bytes:
    return json.dumps(openapi_document()).encode()


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return Response(_document(), mimetype="application/json")
