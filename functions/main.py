"""functions-framework entry point (the Procfile's web process):

    functions-framework --source functions/main.py --target detection_api --signature-type http

With the HTTP signature every path and method reaches this one target; the Flask app in
detection_api.app.http_app does the routing (CloudEvents on POST /, REST, health, metrics).
"""

import functions_framework
from flask import Request, Response

from detection_api.app.http_app import get_app


@functions_framework.http
def detection_api(request: Request) -> Response:
    app = get_app()
    with app.request_context(request.environ):
        return app.full_dispatch_request()
