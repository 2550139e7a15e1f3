"""The terminal of ``detection-api up``: one writer for every line, and the children's logs
followed and printed with their names (local/stack.py)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


class Console:
    """Serialises output lines from the supervisor and the log follower."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def say(self, text: str = "") -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def child_line(self, name: str, line: str) -> None:
        self.say(f"{name:<9} | {line}")


class LogFollower(threading.Thread):
    """Prints new lines of the children's log files, prefixed with their names."""

    def __init__(self, console: Console, interval: float = 0.1) -> None:
        super().__init__(name="log-follower", daemon=True)
        self._console = console
        self._interval = interval
        self._sources: list[_FollowedLog] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def follow(self, name: str, path: Path) -> None:
        """Print what ``path`` gets from now on (earlier runs' lines stay in the file only)."""
        offset = path.stat().st_size if path.exists() else 0
        with self._lock:
            self._sources.append(_FollowedLog(name, path, offset))

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.drain()
        self.drain()

    def drain(self) -> None:
        with self._lock:
            for source in self._sources:
                for line in source.new_lines():
                    self._console.child_line(source.name, line)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)


@dataclass
class _FollowedLog:
    name: str
    path: Path
    offset: int
    partial: bytes = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
