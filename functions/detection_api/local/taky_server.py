"""A local TAK server: taky 0.10 in its own virtualenv, over mutual TLS or plain TCP.

taky pins Flask 2, which cannot share the project's virtualenv (Flask 3 for functions-framework),
so it lives in ``<repo>/.venv-taky``, created on first use (a file lock keeps two processes from
installing at once; a stamp file makes it a no-op afterwards).

What a test should know about taky 0.10 (measured; see the integration fixtures):

- it routes every event to every other connected client, anonymous ones included, except TAK pings
  (``t-x-c-t``), which it answers with a pong (``t-x-c-t-r``) to the sender only;
- it parses and re-serialises every event it routes: lat/lon keep 6 decimals, hae/ce/le 1, and
  ``<detail>`` passes through unchanged;
- it silently drops data for a TLS client whose handshake is not finished;
- it keeps events whose ``stale`` is in the future and replays them to every new connection
  (in memory: a restart forgets them);
- an event without ``how`` crashes it later; after an unescaped ``&`` it ignores the rest of that
  connection;
- with ``log_cot`` set it appends every received event to one file per sending client.
"""

from __future__ import annotations

import configparser
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from detection_api.local.checkout import repo_root
from detection_api.local.pki import CertKeyPaths, PkiPaths
from detection_api.local.ports import LOOPBACK, free_ports
from detection_api.local.procs import ManagedProcess, start_with_port_retry
from detection_api.local.tool_venv import ensure_tool_venv, installed

TAKY_REQUIREMENT = "taky==0.10"
_INSTALL_HINT = (
    "\ntaky is installed from PyPI on first use; check network access to PyPI, "
    "or delete the half-made virtualenv and retry."
)


class TakyInstallError(RuntimeError):
    """taky's virtualenv could not be created or taky could not be installed into it."""


def default_taky_venv() -> Path:
    return repo_root() / ".venv-taky"


def taky_installed(venv_dir: Path | None = None) -> bool:
    venv_dir = Path(venv_dir or default_taky_venv()).resolve()
    return installed(venv_dir, [TAKY_REQUIREMENT], venv_dir / "bin" / "taky")


def ensure_taky(venv_dir: Path | None = None) -> Path:
    """Path of the ``taky`` executable, installing it into ``venv_dir`` on first use."""
    venv_dir = Path(venv_dir or default_taky_venv()).resolve()
    executable = venv_dir / "bin" / "taky"
    ensure_tool_venv(
        venv_dir,
        [TAKY_REQUIREMENT],
        executable,
        base_python=sys.executable,
        tool="taky",
        error=TakyInstallError,
        hint=_INSTALL_HINT,
    )
    return executable


@dataclass
class TakyServer:
    """A supervised taky listening on loopback.

    With ``tls=True`` (the default) it requires client certificates signed by ``pki.ca`` and
    presents ``server_cert`` (default ``pki.server``, valid for ``localhost``/``127.0.0.1``).
    Ports left at 0 are picked free at the first start; ``stop()`` then ``start()`` reuses them.
    """

    root_dir: Path
    pki: PkiPaths | None = None
    tls: bool = True
    port: int = 0
    monitor_port: int = 0  # with TLS taky also opens a plain TCP monitor port
    server_cert: CertKeyPaths | None = None
    venv_dir: Path | None = None
    log_level: str = "info"
    log_path: Path | None = None  # default <root_dir>/taky.log
    process: ManagedProcess | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root_dir = Path(self.root_dir).resolve()
        if self.tls and self.pki is None:
            raise ValueError("TLS mode needs a PKI (pki=generate_pki(...))")

    # --- what clients need ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{LOOPBACK}:{self.port}"

    @property
    def cot_log_dir(self) -> Path:
        """One ``.cot`` file per sending client, every received event appended."""
        return self.root_dir / "cot-log"

    @property
    def config_path(self) -> Path:
        return self.root_dir / "taky.conf"

    @property
    def log_file(self) -> Path:
        """taky's own log (stdout and stderr)."""
        return Path(self.log_path) if self.log_path else self.root_dir / "taky.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("taky is not started")
        return self.process.pid

    def client_env(self, client: str = "forwarder") -> dict[str, str]:
        """The forwarder's environment for this server (TAK_URL and, with TLS, TAK_TLS_*)."""
        env = {"TAK_URL": self.url}
        if self.tls:
            assert self.pki is not None
            paths = self.pki.client(client)
            env |= {
                "TAK_TLS_CA": str(self.pki.ca.cert),
                "TAK_TLS_CERT": str(paths.cert),
                "TAK_TLS_KEY": str(paths.key),
                "TAK_TLS_SERVER_NAME": self.pki.server_name,
            }
        return env

    # --- lifecycle -----------------------------------------------------------------------------

    def write_config(self) -> None:
        config = configparser.ConfigParser()
        config["taky"] = {
            "hostname": "localhost",
            "node_id": "detection-api-local",
            "bind_ip": LOOPBACK,
            "root_dir": str(self.root_dir),  # also holds the management socket taky-mgmt.sock
            "redis": "false",  # in-memory persistence: a restart starts clean
        }
        config["cot_server"] = {"port": str(self.port), "log_cot": str(self.cot_log_dir)}
        config["dp_server"] = {"upload_path": str(self.root_dir / "dp-user")}
        config["ssl"] = {"enabled": "false"}
        if self.tls:
            assert self.pki is not None
            server = self.server_cert or self.pki.server
            config["cot_server"].update(mon_ip=LOOPBACK, mon_port=str(self.monitor_port))
            config["ssl"] = {
                "enabled": "true",
                "client_cert_required": "true",
                "ca": str(self.pki.ca.cert),
                "cert": str(server.cert),
                "key": str(server.key),
                "key_pw": "",
                "cert_db": str(self.root_dir / "cert-db.txt"),
            }
        with self.config_path.open("w") as out:
            config.write(out)

    def start(self, timeout: float = 30.0) -> TakyServer:
        """Start and wait until its ports accept connections."""
        executable = ensure_taky(self.venv_dir)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.cot_log_dir.mkdir(exist_ok=True)
        pick_port = self.port == 0
        pick_monitor_port = self.tls and self.monitor_port == 0

        def launch() -> ManagedProcess:
            cot_port, monitor_port = free_ports(2)
            if pick_port:
                self.port = cot_port
            if pick_monitor_port:
                self.monitor_port = monitor_port
            self.write_config()
            process = ManagedProcess(
                "taky",
                [str(executable), "-c", str(self.config_path), "-l", self.log_level],
                log_path=self.log_file,
                cwd=self.root_dir,
                # taky only notices SIGTERM after its 1 s select() timeout; SIGINT interrupts the
                # select at once and takes the same clean shutdown path (but a bare `except:` in
                # taky can swallow it, hence stop()'s SIGTERM follow-up).
                stop_signal=signal.SIGINT,
            )
            self.process = process.start()
            try:
                process.wait_for_port(self.port, timeout)
                if self.tls:
                    process.wait_for_port(self.monitor_port, timeout)
            except BaseException:
                process.stop(timeout=5)
                raise
            return process

        if pick_port or pick_monitor_port:
            start_with_port_retry(launch)
        else:
            launch()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart(self, timeout: float = 30.0) -> TakyServer:
        """Stop if running, then start on the same ports (clients see an outage)."""
        self.stop()
        return self.start(timeout)
