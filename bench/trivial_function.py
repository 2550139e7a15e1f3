"""The baseline of the ingest benchmarks: a functions-framework endpoint that reads the body and
answers 200, served with the same server settings as the real function."""

import functions_framework
from flask import Request


@functions_framework.http
def trivial(request: Request) -> tuple[str, int]:
    request.get_data()
    return "ok", 200
