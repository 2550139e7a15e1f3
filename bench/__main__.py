"""``python -m bench [NAME ...]``: run the benchmarks, print one table, write the results.

Results go to ``bench/results/latest.json`` (git-ignored). A benchmark that fails is reported
in the table and makes the exit status 1; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import Row

# Benchmark modules under bench/, in the order they run. Add new ones here.
MODULES: tuple[str, ...] = (
    "core", "terrain", "ingest", "forwarder", "redis_cost", "end_to_end", "tak_interop",
    "tak_kill", "taky_store",
)  # fmt: skip
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _table(rows: list[tuple[str, Row]], failures: dict[str, str]) -> str:
    header = ("benchmark", "value", "unit", "baseline", "ratio", "target", "ok", "baseline is")
    lines = [
        (
            f"{module}: {row.name}",
            _format(row.value),
            row.unit,
            _format(row.baseline),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target or "-",
            {None: "-", True: "yes", False: "NO"}[row.meets_target],
            row.baseline_name,
        )
        for module, row in rows
    ]
    lines += [
        (f"{module}: FAILED", "-", "-", "-", "-", "-", "-", reason)
        for module, reason in failures.items()
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines, strict=True)]
    out = []
    for i, line in enumerate([header, *lines]):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(MODULES)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(MODULES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    names = args.names or list(MODULES)

    rows: list[tuple[str, Row]] = []
    failures: dict[str, str] = {}
    started = time.time()
    for name in names:
        print(f"running bench.{name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            rows.extend((name, row) for row in module.run())
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"

    print(_table(rows, failures))
    report: dict[str, Any] = {
        "started_at": started,
        "duration_s": round(time.time() - started, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": [{"module": module, **row.as_dict()} for module, row in rows],
        "failures": failures,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {RESULTS}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
