"""Stand-in for the read-only kubectl calls scripts/knative.sh makes in a DRY_RUN=1 plan:

    python kubectl_reads.py <state.json> get services.serving.knative.dev/<name> -n <ns> \
        -o 'jsonpath=...'

answers from the state a test keeps (support/knative_api.py). Anything else is refused: with
DRY_RUN=1 the script must not run a command that changes the cluster.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from knative_api import answer_jsonpath


def main(argv: list[str]) -> int:
    state_file, *args = argv
    output = next((a.removeprefix("-o").lstrip("=") for a in args if a.startswith("-o")), "")
    if "-o" in args:
        output = args[args.index("-o") + 1]
    if not args or args[0] != "get" or not output.startswith("jsonpath="):
        print(
            f"kubectl stand-in: refusing {' '.join(args)!r} (DRY_RUN=1 must not run it)",
            file=sys.stderr,
        )
        return 3
    state = json.loads(Path(state_file).read_text())
    print(answer_jsonpath(state, output.removeprefix("jsonpath=")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
