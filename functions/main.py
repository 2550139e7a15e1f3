"""functions-framework entry point (the Procfile's web process):

    functions-framework --source functions/main.py --target detection_api --signature-type http

With the HTTP signature every path and method reaches this one target; the Flask app in
detection_api.app.http_app does the routing (CloudEvents on POST /, REST, health, metrics).

The app is built here, at import, so every setting is checked when the process starts: a bad one
stops it with one line on stderr naming the variable (and exit status 1), instead of a 500 on
every request.

functions-framework imports this file inside its own Flask app's context. Its app has one
catch-all rule whose view calls the target, which would dispatch the request a second time in our
app; so its WSGI callable is pointed at our app's instead (keeping its server: gunicorn, PORT,
WORKERS, THREADS, the request timeout). Every request then costs one Flask dispatch, not two
(70 us less per request on this machine), and the few requests the framework used to answer
itself (/robots.txt, /favicon.ico) are ours too: problem+json like every other answer.
"""

import functions_framework
from flask import Request, Response, current_app, has_app_context

from detection_api.app.collector import settle_collector
from detection_api.app.http_app import get_app
from detection_api.settings import ConfigError

try:
    _APP = get_app()
except ConfigError as _error:
    raise SystemExit(f"detection-api: {_error}") from None
settle_collector()  # start-up's objects out of the collector's way (app/collector.py)


@functions_framework.http
def detection_api(request: Request) -> Response:
    """The target, for a framework that calls it (the WSGI hand-over below makes this unused
    under functions-framework's own server): the whole WSGI app, its middleware included."""
    return Response.from_app(_APP, request.environ)


if has_app_context():
    current_app.wsgi_app = _APP.wsgi_app  # type: ignore[method-assign]
