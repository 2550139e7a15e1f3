"""``detection-api up``: the whole local stack in one command (``make run``); see local/stack.py.

The function port is ``--port``, else ``$PORT``, else 8080. If that port is busy, ``up`` says so
and exits 1 instead of moving elsewhere: the printed ``curl``, ``detection-api send`` and any
producer already configured all point at that one port, so a silent move would break them. Ports
``up`` picks itself (Redis, taky, the forwarder's metrics) are free loopback ports.

TAK: a local taky over mutual TLS unless ``TAK_URL`` is set (then the forwarder uses that and the
``TAK_TLS_*`` variables from the environment). ``--no-tak`` without ``TAK_URL`` runs no TAK server
and no forwarder: detections are accepted and stay queued in Redis until a forwarder runs.

First Ctrl-C / SIGTERM / SIGHUP: stop every child in order (exit 0). A second one, a second or
more later: SIGKILL them all (exit 130). One sooner is the same request delivered twice: a
SIGTERM to the process group under ``make run`` reaches ``up`` directly and again relayed by make.
A child that dies on its own stops the rest (exit 1).
"""

from __future__ import annotations

import argparse
import signal
import time
from types import FrameType

from detection_api.local.console import Console
from detection_api.local.stack import run_stack
from detection_api.local.stack_config import StackConfig, StackError
from detection_api.settings import load_settings
from detection_api.stop_signal import StopSignal

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A stop signal this soon after the first is the same request arriving twice, not impatience.
_REPEAT_WINDOW_SECONDS = 1.0


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        config = StackConfig.from_options(
            data_dir=args.data_dir, port=args.port, no_tak=args.no_tak
        )
    except StackError as exc:
        console.say(f"detection-api up: {exc}")
        return 2
    load_settings()  # a bad setting stops here (ConfigError, one line), before any child starts
    stop_requested = StopSignal()
    first_signal_at: list[float] = []

    def on_stop_signal(signum: int, _frame: FrameType | None) -> None:
        # Take no lock here: the main thread may hold it (Console.say's, a threading.Event's),
        # and waiting for it in a handler that thread runs would hang `up` (see StopSignal).
        now = time.monotonic()
        if not first_signal_at:
            first_signal_at.append(now)
            stop_requested.set(signum)
        elif now - first_signal_at[0] >= _REPEAT_WINDOW_SECONDS:
            raise KeyboardInterrupt  # second signal: run_stack kills everything at once

    previous = {sig: signal.signal(sig, on_stop_signal) for sig in _STOP_SIGNALS}
    try:
        return run_stack(config, console, stop_requested)
    except StackError as exc:
        console.say(f"detection-api up: {exc}")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_requested.close()
