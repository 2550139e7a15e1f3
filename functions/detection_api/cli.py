"""The ``detection-api`` console script: parses arguments, then hands over to one command module.

Each verb lives in ``detection_api.commands.<module>`` as ``run(args) -> int`` and is imported only
when used, so ``detection-api geolocate`` never imports Flask, Redis or sockets.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from detection_api.settings import ConfigError  # (pydantic only: no Flask, Redis or sockets)

# verb -> module under detection_api.commands that implements run(args)
_VERB_MODULES = {
    "geolocate": "core",
    "cot": "core",
    "schema": "core",
    "up": "up",
    "worker": "worker",
    "send": "send",
    "token": "token",  # nosec B105 # the verb name 'token', not a password
    "queue": "queue",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detection-api",
        description="AI detections to TAK: geolocate, build CoT, run the local stack.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    for verb, text in (
        ("geolocate", "print the ground position and accuracy of each detection as JSON"),
        ("cot", "print the Cursor-on-Target XML of each detection"),
    ):
        p = verbs.add_parser(verb, help=text, description=text)
        p.add_argument(
            "file", nargs="?", default="-", help="JSON file: one detection or a list (- = stdin)"
        )

    p = verbs.add_parser("schema", help="print the JSON Schema of the detection payload")

    p = verbs.add_parser(
        "up", help="run the whole local stack: Redis, function, forwarder, TAK server"
    )
    p.add_argument("--port", type=int, default=None, help="function port (default $PORT or 8080)")
    p.add_argument("--data-dir", default=".data", help="Redis appendonly data and local state")
    p.add_argument(
        "--no-tak", action="store_true", help="do not start a local taky even if TAK_URL is unset"
    )

    p = verbs.add_parser("worker", help="run the TAK forwarder (long-running rq worker)")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")

    p = verbs.add_parser("send", help="send detections as CloudEvents (a producer for scripts)")
    p.add_argument("file", help="JSON file: one detection or a list (- = stdin)")
    p.add_argument("--url", default=None, help="function URL (default http://127.0.0.1:$PORT/)")
    p.add_argument("--mode", choices=("binary", "structured", "batch"), default="binary")
    p.add_argument("--source", default="detection-api-cli", help="CloudEvent source attribute")
    p.add_argument("--token", default=None, help="bearer token (default $DETECTION_API_TOKEN)")
    p = verbs.add_parser(
        "token",
        help="mint a bearer token from the configured key (operators only)",
        description="Sign a JWT with JWT_SECRET_KEY (HS256) or JWT_PRIVATE_KEY (RS256/ES256).",
    )
    p.add_argument("--sub", required=True, help="subject: who the token is for")
    p.add_argument(
        "--scope",
        action="append",
        default=None,
        choices=("detections:write", "detections:read", "detections:read-all", "admin"),
        help="repeat for several (default: detections:write)",
    )
    p.add_argument(
        "--ttl", type=int, default=None, help="lifetime in seconds (default JWT_EXPIRATION)"
    )
    p = verbs.add_parser("queue", help="inspect and repair the delivery queue (operators)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="depths, oldest age, forwarders, TAK connection")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dead = actions.add_parser("dead", help="list dead letters with their reasons")
    dead.add_argument(
        "--queue",
        default=None,
        choices=("tak", "notify", "broker"),
        help="default: tak, then the Broker's dead letters (--json: tak only)",
    )
    dead.add_argument("--json", action="store_true", help="machine-readable output")
    requeue = actions.add_parser("requeue", help="send dead letters again (front of the queue)")
    requeue.add_argument("ids", nargs="*", metavar="ID", help="job ids (see `queue dead`)")
    requeue.add_argument("--all", action="store_true", help="every dead letter")
    requeue.add_argument("--queue", default="tak", choices=("tak", "notify", "broker"))
    purge = actions.add_parser("purge", help="delete old dead letters")
    purge.add_argument("--dead", action="store_true", required=True, help="purge dead letters")
    purge.add_argument(
        "--older-than", required=True, metavar="DURATION", help="e.g. 90s, 30m, 12h, 7d"
    )
    purge.add_argument("--queue", default="tak", choices=("tak", "notify", "broker"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"detection_api.commands.{_VERB_MODULES[args.verb]}")
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:  # a bad setting: one line naming it, never a traceback
        print(f"detection-api {args.verb}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
