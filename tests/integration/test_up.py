"""``detection-api up`` as a person runs it: a subprocess, its output, signals and child PIDs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detection_api.local.ports import free_port
from detection_api.local.probes import http_ok
from detection_api.local.stack import READY_LINE
from detection_api.local.stack_config import StackConfig, StackError

_CHILD_ROW = re.compile(r"^  (\w+)\s+pid (\d+)\s+(\S+)")
_ALL_CHILDREN = {"redis", "taky", "forwarder", "function"}


def _group_gone(pgid: int) -> bool:
    """Every child is its own process-group leader: gone means no process of that group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # Members may linger as zombies for an instant (nobody waits for an orphan's grandchildren).
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


class UpProcess:
    """``detection-api up`` in a subprocess, its output collected line by line."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str], *extra: str) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.popen = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "detection-api"),
                "up",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # our own group: the cleanup can reach everything it started
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(text in line for line in self.lines):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.popen.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))
                self._changed.wait(min(remaining, 0.5))

    def children(self) -> dict[str, tuple[int, str]]:
        """name -> (pid, where it listens), from the table printed before the ready line."""
        found = {}
        for line in self.lines:
            match = _CHILD_ROW.match(line)
            if match:
                found[match[1]] = (int(match[2]), match[3])
        return found

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(5)
        return code

    def cleanup(self, child_pids: list[int]) -> None:
        """Whatever happened in the test: nothing it started may outlive it."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        for pid in child_pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def up_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAK_")}
    env.pop("PORT", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def run_up(tmp_path, up_env, taky_executable):
    """Start ``up`` (taky already installed by ``taky_executable``); cleaned up at teardown."""
    started: list[tuple[UpProcess, list[int]]] = []

    def start(*extra: str, port: int | None = None, env: dict[str, str] | None = None) -> UpProcess:
        up = UpProcess(tmp_path / "data", port or free_port(), env or up_env, *extra)
        started.append((up, []))
        return up

    def remember_children() -> None:
        for up, pids in started:
            pids[:] = [pid for pid, _ in up.children().values()]

    yield start
    remember_children()
    for up, pids in started:
        up.cleanup(pids)


def test_up_starts_everything_and_sigterm_stops_every_child(run_up, tmp_path):
    up = run_up()
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    assert set(children) == _ALL_CHILDREN, up.output
    function_url = children["function"][1]
    assert http_ok(f"{function_url}health")
    assert children["taky"][1].startswith("tls://127.0.0.1:")
    assert "curl -sS -X POST " in up.output and "/api/v1/detections" in up.output
    assert "detection-api send " in up.output
    assert (tmp_path / "data" / "redis").is_dir()
    assert (tmp_path / "data" / "pki" / "ca.pem").is_file()
    # Children's output is interleaved, prefixed with their names.
    assert any(line.startswith("redis     | ") for line in up.lines)

    up.popen.send_signal(signal.SIGTERM)
    assert up.wait(timeout=90) == 0, up.output
    for name, (pid, _) in children.items():
        assert _group_gone(pid), f"{name} (pid {pid}) survived:\n{up.output}"
    assert "detection-api up: stopped" in up.output


def test_up_stops_the_rest_when_a_child_dies(run_up):
    up = run_up()
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    taky_pid = children["taky"][0]

    os.kill(taky_pid, signal.SIGKILL)

    assert up.wait(timeout=90) == 1, up.output
    assert "taky exited unexpectedly" in up.output
    for name, (pid, _) in children.items():
        assert _group_gone(pid), f"{name} (pid {pid}) survived:\n{up.output}"


def test_up_refuses_a_busy_function_port_and_starts_nothing(run_up, tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        up = run_up(port=port)
        assert up.wait(timeout=60) == 1
    assert f"port {port} is already in use" in up.output
    assert up.children() == {}
    assert not (tmp_path / "data" / "redis").exists()


def test_up_refuses_a_data_dir_another_up_is_using(run_up, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with (data_dir / ".up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `up` holds it
        up = run_up()
        assert up.wait(timeout=60) == 1
    assert "another `detection-api up` is using" in up.output
    assert up.children() == {}


def test_up_without_tak_runs_no_forwarder(run_up):
    up = run_up("--no-tak")
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    assert set(children) == {"redis", "function"}, up.output
    assert "forwarder  not started" in up.output
    up.popen.send_signal(signal.SIGTERM)
    assert up.wait(timeout=90) == 0, up.output
    assert all(_group_gone(pid) for pid, _ in children.values())


def test_a_stop_signal_delivered_twice_within_a_second_still_stops_in_order(run_up):
    """SIGTERM to the process group of `make run` reaches `up` twice within milliseconds (from
    the sender and relayed by make): one request, an orderly stop, not the second-signal kill."""
    up = run_up("--no-tak")
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    first_at = time.monotonic()
    up.popen.send_signal(signal.SIGTERM)
    up.wait_for_line("detection-api up: stop requested", timeout=5)
    up.popen.send_signal(signal.SIGTERM)  # once the first is handled: two deliveries, not one
    if time.monotonic() - first_at >= 0.9:
        pytest.skip("the machine took too long to act on the first signal to tell the two apart")
    assert up.wait(timeout=90) == 0, up.output
    assert "killing everything" not in up.output
    assert all(_group_gone(pid) for pid, _ in children.values())


def test_up_uses_an_external_tak_server_from_tak_url(run_up, up_env, taky_tls):
    up = run_up(env={**up_env, **taky_tls.client_env()})
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    assert set(children) == _ALL_CHILDREN - {"taky"}, up.output
    assert f"{taky_tls.url}  (from TAK_URL)" in up.output
    up.popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert up.wait(timeout=90) == 0, up.output
    assert all(_group_gone(pid) for pid, _ in children.values())
    assert taky_tls.process.is_running  # not ours to stop


@pytest.mark.parametrize(
    ("environ", "no_tak", "local_tak", "forwarder"),
    [
        ({}, False, True, True),
        ({"TAK_URL": "tls://tak.example:8089"}, False, False, True),
        ({"TAK_URL": "tls://tak.example:8089"}, True, False, True),
        ({}, True, False, False),
    ],
)
def test_stack_config_decides_what_runs(environ, no_tak, local_tak, forwarder, tmp_path):
    config = StackConfig.from_options(data_dir=tmp_path, port=None, no_tak=no_tak, environ=environ)
    assert (config.local_tak, config.forwarder) == (local_tak, forwarder)
    assert config.function_port == 8080


def test_stack_config_port_comes_from_the_option_then_port(tmp_path):
    def port(option, environ):
        return StackConfig.from_options(
            data_dir=tmp_path, port=option, no_tak=False, environ=environ
        ).function_port

    assert port(None, {"PORT": "9001"}) == 9001
    assert port(9002, {"PORT": "9001"}) == 9002
    with pytest.raises(StackError, match="PORT must be a number"):
        port(None, {"PORT": "eighty"})
    with pytest.raises(StackError, match=r"1\.\.65535"):
        port(0, {})


def _listening_inodes() -> dict[str, str]:
    """inode -> local address of every listening TCP socket (IPv4 and IPv6)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found[fields[9]] = fields[1]
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
    return pids


_LOOPBACK_HEX = ("0100007F:", "00000000000000000000000001000000:")  # 127.0.0.1, ::1


def test_up_listens_on_loopback_only_and_keeps_its_files_private(run_up, tmp_path):
    up = run_up()
    up.wait_for_line(READY_LINE, timeout=120)
    children = up.children()
    listening = _listening_inodes()
    addresses = {}
    for name, (pgid, _) in children.items():
        for pid in _group_pids(pgid):
            for inode in _socket_inodes(pid) & listening.keys():
                addresses[f"{name}/{pid}"] = listening[inode]
    assert {key.split("/")[0] for key in addresses} >= {"redis", "taky", "function"}, addresses
    exposed = {k: a for k, a in addresses.items() if not a.startswith(_LOOPBACK_HEX)}
    # The forwarder's metrics port is the forwarder's own setting (0.0.0.0 for Prometheus in
    # a pod); every service the stack itself configures listens on loopback only.
    assert {k.split("/")[0] for k in exposed} <= {"forwarder"}, exposed
    data = tmp_path / "data"
    assert data.stat().st_mode & 0o777 == 0o700
    up.popen.send_signal(signal.SIGTERM)
    assert up.wait(timeout=90) == 0, up.output
    written = [
        p
        for p in (*data.glob("redis/**/*"), *data.glob("logs/*"), *data.glob("taky/cot-log/*"))
        if p.is_file()
    ]
    assert any("appendonly" in str(p) for p in written), written
    assert any(p.parent.name == "logs" for p in written), written
    loose = {str(p): oct(p.stat().st_mode & 0o777) for p in written if p.stat().st_mode & 0o077}
    assert loose == {}
