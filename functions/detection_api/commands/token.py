"""``detection-api token``: mint a bearer token for an operator or a producer."""

from __future__ import annotations

import argparse
import sys

from detection_api.auth import Scope, mint_token
from detection_api.settings import get_settings


def run(args: argparse.Namespace) -> int:
    scopes = args.scope or [Scope.WRITE.value]
    try:
        token = mint_token(get_settings(), subject=args.sub, scopes=scopes, ttl_seconds=args.ttl)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
