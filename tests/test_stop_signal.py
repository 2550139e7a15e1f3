"""StopSignal: a signal handler can set it at any point of a wait, and the wait wakes at once.

A real signal (SIGUSR1, through ``os.kill``) is raised at every traced line of ``wait()``, one
line per round, so its handler runs at each point of the wait in turn: the run that found
``detection-api up`` hanging on SIGTERM was a handler landing while the main thread held
``threading.Event``'s internal lock. Each round runs in a child interpreter so a hang ends as a
failed check, never as a stuck test run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from detection_api.stop_signal import StopSignal

# Prints one line per round: "<line events seen> <what wait() returned>", then "done".
_HARNESS = textwrap.dedent(
    """
    import importlib, os, signal, sys, threading

    module_name, class_name = sys.argv[1].split(":")
    flag_class = getattr(importlib.import_module(module_name), class_name)
    watched = {"wait", "_wait_for_tstate_lock", "__enter__", "__exit__", "_is_owned",
               "_release_save", "_acquire_restore", "set", "is_set", "notify", "notify_all"}
    for target in range(200):
        flag = flag_class()
        signal.signal(signal.SIGUSR1, lambda signum, frame, f=flag: f.set())
        seen = 0

        def tracer(frame, event, arg):
            global seen
            if event == "line":
                if seen == target:
                    os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs right here
                seen += 1
            return tracer

        def on_call(frame, event, arg):
            return tracer if frame.f_code.co_name in watched else None

        sys.settrace(on_call)
        result = flag.wait(0.5)
        sys.settrace(None)
        print(seen, result, flush=True)
        if seen <= target:  # the signal was raised after the wait: every line has had its turn
            break
    print("done", flush=True)
    """
)


def test_a_signal_at_any_line_of_wait_wakes_it_at_once() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _HARNESS, "detection_api.stop_signal:StopSignal"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,  # a hang fails here instead of blocking the suite
    )
    assert run.returncode == 0, run.stderr
    *rounds, last = run.stdout.splitlines()
    assert last == "done"
    # Every round but the last raised the signal inside wait(), and wait() saw it.
    assert len(rounds) >= 3, rounds
    assert all(r.split()[1] == "True" for r in rounds[:-1]), rounds


def test_set_from_a_real_signal_handler_wakes_a_waiting_thread() -> None:
    flag = StopSignal()
    woke = threading.Event()
    waiter = threading.Thread(target=lambda: flag.wait() and woke.set(), daemon=True)
    waiter.start()
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: flag.set(signum))
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        waiter.join(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        flag.close()
    assert woke.is_set()
    assert flag.signum == signal.SIGUSR1


def test_wait_times_out_unset_and_stays_set_once_set() -> None:
    flag = StopSignal()
    assert flag.wait(0.01) is False
    assert not flag.is_set()
    flag.set()
    flag.set()  # again: harmless
    assert flag.wait(0) is True
    assert flag.wait(None) is True
    assert flag.signum is None  # not set by a signal
    flag.close()
    flag.set()  # after close (a late handler): no error, no write to a reused descriptor
    assert flag.is_set()


@pytest.mark.parametrize("timeout", [0, 0.001])
def test_many_sets_never_block(timeout: float) -> None:
    flag = StopSignal()
    for _ in range(100_000):  # far more than a pipe holds: set() never blocks on a full pipe
        flag.set()
    assert flag.wait(timeout)
    flag.close()
