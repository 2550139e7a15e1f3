"""A stop request that a signal handler can make safely (``detection-api up`` and ``worker``).

Python runs a signal handler in the main thread between two bytecodes, which can be inside
``threading.Event.wait`` while that thread holds the event's internal (non-reentrant) lock.
``Event.set()`` called from the handler then waits for that lock forever: the process hangs on
SIGTERM instead of stopping (with a polling loop, about one signal in a hundred once the poll is
short). :class:`StopSignal` takes no lock: ``set()`` sets a flag and writes one byte to a pipe,
and ``wait()`` sleeps in ``select`` on that pipe, so a handler that runs at any point of a
``wait()`` (before, during or after the ``select``) wakes it at once.
"""

from __future__ import annotations

import contextlib
import os
import select


class StopSignal:
    """A one-way flag: once set it stays set. ``set()`` is safe in a signal handler."""

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._set = False
        self.signum: int | None = None  # the signal that set it first, when a handler did

    def set(self, signum: int | None = None) -> None:
        if not self._set and signum is not None:
            self.signum = signum
        self._set = True
        # A full pipe has a wake-up pending already; a closed one has nobody waiting.
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"\0")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Return True as soon as the flag is set, False after ``timeout`` seconds without."""
        if not self._set:
            select.select([self._read_fd], [], [], timeout)
        return self._set

    def close(self) -> None:
        """Release the pipe (only once no handler can call ``set()`` any more)."""
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fd = self._write_fd = -1
