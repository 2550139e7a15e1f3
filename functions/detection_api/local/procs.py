"""Supervised child processes for the local stack and the integration tests.

A :class:`ManagedProcess` runs one command in its own process group with stdout and stderr appended
to a log file. ``stop()`` sends SIGTERM to the whole group and SIGKILL after a deadline; ``kill()``
is SIGKILL at once (crash tests). Readiness is always a polled condition with a deadline, and a
child that dies while we wait fails the wait at once, with the tail of its log in the message.

Safety net: every started process is registered; an ``atexit`` hook stops whatever is still running,
``install_signal_safety_net()`` does the same on SIGTERM/SIGHUP, and children started from the main
thread get ``PR_SET_PDEATHSIG`` so the kernel kills them even if we are SIGKILLed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess  # nosec B404 # local stack supervisor: starts our own programs
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from detection_api.local.ports import LOOPBACK, has_listener, is_listening

_PR_SET_PDEATHSIG = 1
_ADDRESS_IN_USE_MARKERS = ("address already in use", "errno 98", "eaddrinuse", "connection in use")


class ProcessExited(RuntimeError):
    """A managed process ended while we were waiting for it to become ready (or to do something)."""

    def __init__(self, name: str, returncode: int, log_tail: str) -> None:
        self.name = name
        self.returncode = returncode
        self.log_tail = log_tail
        super().__init__(f"{name} exited with code {returncode}; last log lines:\n{log_tail}")

    @property
    def address_in_use(self) -> bool:
        """True when the log says the listening port was taken (retry on another port)."""
        text = self.log_tail.lower()
        return any(marker in text for marker in _ADDRESS_IN_USE_MARKERS)


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = 0.05,
) -> None:
    """Poll ``predicate`` until true; at the deadline raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


class ManagedProcess:
    """One supervised child process (see the module docstring)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0  # where this run's output starts in the (appended) log file

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid if self._popen else None}>"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> ManagedProcess:
        if self._popen is not None:
            if self.returncode is None:
                raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
            self._finish()  # reap the previous run
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._popen = subprocess.Popen(  # noqa: S603 (argv from our own code, no shell)  # nosec B603 # argv from our own code, no shell
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # own process group: stop() reaches grandchildren too
                preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509 (only calls prctl)
            )
        _register(self)
        return self

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit code if the process has ended (negative: killed by that signal), else None.

        Looks without reaping: while the exited leader stays a zombie its pid, and so its process
        group id, cannot be reused, which keeps ``stop()``'s group-wide signals safe.
        """
        if self._popen is None:
            return None
        if self._popen.returncode is not None:
            return self._popen.returncode
        try:
            info = os.waitid(os.P_PID, self._popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere
            return self._popen.poll()
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    @property
    def is_running(self) -> bool:
        return self._popen is not None and self.returncode is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """Signal the process group (SIGTERM unless told otherwise), SIGKILL it after ``timeout``.

        With another ``stop_signal`` (a faster way out, e.g. SIGINT), SIGTERM follows after a
        second (or a third of the timeout) in case the first signal was swallowed. Returns the
        exit code (negative: the signal that ended it).
        """
        if self._popen is None:
            return None
        deadline = time.monotonic() + timeout
        signals = [self.stop_signal]
        if self.stop_signal != signal.SIGTERM:
            signals.append(signal.SIGTERM)
        for index, sig in enumerate(signals):
            if self.returncode is not None:
                break
            self._signal_group(sig)
            last = index == len(signals) - 1
            wait_for = deadline - time.monotonic() if last else min(1.0, timeout / 3)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: self.returncode is not None, max(wait_for, 0), interval=0.02)
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL the process group now (a crash, for durability tests); return the exit code."""
        if self._popen is None:
            return None
        return self._finish()

    def _finish(self) -> int | None:
        assert self._popen is not None
        if self._popen.returncode is None:
            # The leader is alive or an unreaped zombie, so the group id is still ours: SIGKILL
            # reaches the leader and any straggling grandchildren before we reap.
            self._signal_group(signal.SIGKILL)
            self._popen.wait()
        _unregister(self)
        return self._popen.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # group gone and the id reused by someone else's session
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    # --- waiting -------------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float, *, what: str = "condition"
    ) -> None:
        """Like :func:`wait_until`, but fail at once with the log tail if the process dies."""

        def alive_and_ready() -> bool:
            if predicate():
                return True
            code = self.returncode
            if code is not None:
                raise ProcessExited(self.name, code, self.log_tail(since_start=True))
            return False

        try:
            wait_until(alive_and_ready, timeout, what=f"{self.name}: {what}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last log lines:\n{self.log_tail()}") from None

    def wait_for_port(self, port: int, timeout: float = 30.0, host: str = LOOPBACK) -> None:
        """Wait until ``port`` listens (for loopback without connecting to it: no log noise)."""

        def listening() -> bool:
            return has_listener(port) if host == LOOPBACK else is_listening(port, host)

        self.wait_until(listening, timeout, what=f"{host}:{port} to listen")

    # --- logs ----------------------------------------------------------------------------------

    def log_text(self, *, since_start: bool = False) -> str:
        try:
            with self.log_path.open("rb") as log:
                if since_start:
                    log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30, *, since_start: bool = False) -> str:
        """The last ``lines`` lines of the log (error messages for exceptions and reports)."""
        return "\n".join(self.log_text(since_start=since_start).splitlines()[-lines:])


def start_with_port_retry(start: Callable[[], ManagedProcess], attempts: int = 5) -> ManagedProcess:
    """Call ``start`` (which picks fresh ports and waits for readiness) again if a port was taken.

    A port picked as free can be taken by another process before our server binds it.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except ProcessExited as exc:
            if not exc.address_in_use or attempt == attempts:
                raise
    raise AssertionError("unreachable")


# --- safety net ------------------------------------------------------------------------------

_live: dict[int, ManagedProcess] = {}
_live_lock = threading.Lock()


def _register(process: ManagedProcess) -> None:
    with _live_lock:
        _live[id(process)] = process


def _unregister(process: ManagedProcess) -> None:
    with _live_lock:
        _live.pop(id(process), None)


def live_processes() -> list[ManagedProcess]:
    """Processes started and not yet stopped (newest last)."""
    with _live_lock:
        return list(_live.values())


def stop_all(timeout: float = 5.0) -> None:
    """Stop every process still registered, newest first (dependents before their servers)."""
    for process in reversed(live_processes()):
        with contextlib.suppress(Exception):
            process.stop(timeout)


atexit.register(stop_all)


def install_signal_safety_net(
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGHUP),
) -> None:
    """On these signals, stop all managed processes, then let the previous handler act."""
    for sig in signals:
        previous = signal.getsignal(sig)

        def handler(
            signum: int,
            frame: FrameType | None,
            _previous: object = previous,
            _sig: signal.Signals = sig,
        ) -> None:
            stop_all(timeout=2.0)
            if callable(_previous):
                _previous(signum, frame)
            elif _previous != signal.SIG_IGN:
                signal.signal(_sig, signal.SIG_DFL)
                os.kill(os.getpid(), _sig)

        signal.signal(sig, handler)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking the kernel to SIGKILL the child when its parent dies (Linux).

    PDEATHSIG fires when the *thread* that forked exits, so it is only armed from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not (
        threading.main_thread()
    ):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return arm
