"""functions-framework entry point (the Procfile's web process):

    functions-framework --source functions/main.py --target detection_api --signature-type http

With the HTTP signature every path and method reaches this one target; the Flask app in
detection_api.app.http_app does the routing (CloudEvents on POST /, REST, health, metrics).

The app is built here, at import, so every setting is checked when the process starts: a bad one
stops it with one line on stderr naming the variable (and exit status 1), instead of a 500 on
every request.
"""

import functions_framework
from flask import Request, Response, current_app, has_app_context, request

from detection_api.app.http_app import get_app
from detection_api.settings import ConfigError

try:
    _APP = get_app()
except ConfigError as _error:
    raise SystemExit(f"detection-api: {_error}") from None


@functions_framework.http
def detection_api(request: Request) -> Response:
    app = _APP
    with app.request_context(request.environ):
        return app.full_dispatch_request()


def _not_routed_by_the_framework(_error: Exception) -> Response:
    return detection_api(request)


# functions-framework answers a few requests itself with an HTML 404 before the target sees them
# (/robots.txt, /favicon.ico, paths its catch-all rule cannot match): hand those to the app too,
# so every answer is problem+json. The framework imports this file inside its app context.
if has_app_context():
    current_app.register_error_handler(404, _not_routed_by_the_framework)
