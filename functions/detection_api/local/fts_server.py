"""FreeTAKServer 2.2.1 for integration tests: its own virtualenv, its own network namespace.

What FreeTAKServer needs and does (read from its source, FreeTAKServer/core/configuration/
MainConfig.py and services/ssl_cot_service, and measured):

- Python 3.11, ``setuptools<81`` (its ``digitalpy`` dependency imports ``pkg_resources``) and
  ``opentelemetry-sdk``/``-api`` 1.24.0 (1.45 crashes its CoT services). Installed once into
  ``<repo>/.venv-fts`` (a file lock keeps two sessions from installing at once; a stamp makes it a
  no-op afterwards; the install is bounded in time).
- It keeps everything under the hard-coded ``/opt/fts`` and asks interactive questions on the
  first start unless ``FTS_FIRST_START=false``. Each server here runs in a private mount
  namespace with a temporary directory bind-mounted on ``/opt/fts``, so runs never share state
  and nothing is left on the host but the empty mount point.
- It binds 0.0.0.0 on 8080/8443 (REST, data packages), 8087 (CoT TCP), 8089 (CoT TLS) and a
  dozen internal ZeroMQ ports whatever it is told. So it runs in a network namespace of its own
  (``ip netns``), reached over a veth pair with a private /30; nothing listens on the host. This
  needs root (CI runs as root); without it the tests skip with the reason.
- TLS: it verifies clients against ``FTS_CADIR`` with ``VERIFY_CRL_CHECK_LEAF``, so the CA file
  given to it holds our test CA followed by an (empty) CRL signed by that CA. It generates a CA
  (and a CRL over ours) unless ``/opt/fts/certs/ca.key`` exists: our CA goes there. Its server
  certificate is ``FTS_SERVER_PEMDIR``/``FTS_SERVER_KEYDIR``: the test PKI's ``server`` (SAN
  ``localhost``), so clients connect to the veth address with ``TAK_TLS_SERVER_NAME=localhost``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import socket
import ssl
import subprocess  # nosec B404 # installs and runs FreeTAKServer and ip(8)
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from detection_api.local.checkout import repo_root
from detection_api.local.pki import PkiPaths
from detection_api.local.procs import ManagedProcess
from detection_api.local.tool_venv import INSTALL_TIMEOUT_S, ensure_tool_venv, installed, run_step

FTS_REQUIREMENTS = (
    "FreeTAKServer==2.2.1",
    "setuptools<81",
    "opentelemetry-sdk==1.24.0",
    "opentelemetry-api==1.24.0",
)
FTS_PYTHON = "python3.11"
COT_TCP_PORT = 8087
COT_TLS_PORT = 8089
_PERSISTENCE_PATH = Path("/opt/fts")


class FtsUnavailable(RuntimeError):
    """FreeTAKServer cannot run here (no root, no ip netns, no Python 3.11, install failed)."""


def default_fts_venv() -> Path:
    return repo_root() / ".venv-fts"


def ensure_fts(venv_dir: Path | None = None) -> Path:
    """The virtualenv's python with FreeTAKServer installed (installing it on first use)."""
    venv_dir = Path(venv_dir or default_fts_venv()).resolve()
    python = venv_dir / "bin" / "python"
    if installed(venv_dir, FTS_REQUIREMENTS, python):
        return python
    base = shutil.which(FTS_PYTHON)
    if base is None:
        raise FtsUnavailable(f"FreeTAKServer 2.2.1 needs {FTS_PYTHON}, not found on PATH")
    ensure_tool_venv(
        venv_dir,
        FTS_REQUIREMENTS,
        python,
        base_python=base,
        tool="FreeTAKServer",
        error=FtsUnavailable,
    )
    return python


def _run(argv: list[str], what: str, timeout: float = INSTALL_TIMEOUT_S) -> None:
    run_step(argv, what, error=FtsUnavailable, timeout=timeout)


def netns_unavailable_reason() -> str | None:
    """Why FreeTAKServer cannot get a network namespace here, or None if it can."""
    if os.geteuid() != 0:
        return "FreeTAKServer binds 0.0.0.0: it runs in its own network namespace, which needs root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (iproute2/util-linux)"
    probe = f"dapi-probe-{secrets.token_hex(3)}"
    try:
        _run(["ip", "netns", "add", probe], "create a network namespace", timeout=10)
    except FtsUnavailable as exc:
        return str(exc)
    with contextlib.suppress(FtsUnavailable):
        _run(["ip", "netns", "del", probe], "delete the probe namespace", timeout=10)
    return None


def write_ca_with_crl(pki: PkiPaths, path: Path) -> None:
    """Our CA certificate followed by an empty CRL it signed (FreeTAKServer checks CRLs)."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca.key.read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(days=1))
        .next_update(now + dt.timedelta(days=30))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path.write_bytes(pki.ca.cert.read_bytes() + crl.public_bytes(serialization.Encoding.PEM))


@dataclass
class FtsServer:
    """A FreeTAKServer in its own network namespace. ``.tcp_url`` / ``.tls_url`` reach it."""

    root_dir: Path
    pki: PkiPaths
    tls: bool = True  # what ``url`` and ``client_env`` point at (both ports are always open)
    venv_dir: Path | None = None
    process: ManagedProcess | None = field(default=None, init=False)
    namespace: str = field(default_factory=lambda: f"dapi-fts-{secrets.token_hex(3)}")
    _host_if: str = field(default_factory=lambda: f"vf{secrets.token_hex(4)}")
    address: str = ""

    @property
    def url(self) -> str:
        return self.tls_url if self.tls else self.tcp_url

    @property
    def tcp_url(self) -> str:
        return f"tcp://{self.address}:{COT_TCP_PORT}"

    @property
    def tls_url(self) -> str:
        return f"tls://{self.address}:{COT_TLS_PORT}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client_env(self, client: str = "forwarder", tls: bool | None = None) -> dict[str, str]:
        use_tls = self.tls if tls is None else tls
        if not use_tls:
            return {"TAK_URL": self.tcp_url}
        paths = self.pki.client(client)
        return {
            "TAK_URL": self.tls_url,
            "TAK_TLS_CA": str(self.pki.ca.cert),
            "TAK_TLS_CERT": str(paths.cert),
            "TAK_TLS_KEY": str(paths.key),
            "TAK_TLS_SERVER_NAME": self.pki.server_name,
        }

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> FtsServer:
        python = ensure_fts(self.venv_dir)
        self.root_dir = Path(self.root_dir).resolve()
        data = self.root_dir / "opt-fts"
        data.mkdir(parents=True, exist_ok=True)
        _PERSISTENCE_PATH.mkdir(parents=True, exist_ok=True)  # the bind-mount point
        ca_file = self.root_dir / "ca-with-crl.pem"
        write_ca_with_crl(self.pki, ca_file)
        # With a CA of its own in place FreeTAKServer does not generate one (nor a CRL over ours).
        certs = data / "certs"
        certs.mkdir(exist_ok=True)
        shutil.copyfile(self.pki.ca.cert, certs / "ca.pem")
        shutil.copyfile(self.pki.ca.key, certs / "ca.key")
        self._create_namespace()
        env = {
            **os.environ,
            "FTS_FIRST_START": "false",
            "FTS_CADIR": str(ca_file),
            "FTS_CRLDIR": str(ca_file),
            "FTS_SERVER_PEMDIR": str(self.pki.server.cert),
            "FTS_SERVER_KEYDIR": str(self.pki.server.key),
            "FTS_UNENCRYPTED_KEYDIR": str(self.pki.server.key),
        }
        script = f'mount --bind "{data}" {_PERSISTENCE_PATH} && exec "$0" "$@"'
        argv = [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script,
            str(python), "-m", "FreeTAKServer.controllers.services.FTS", "-AutoStart", "True",
        ]  # fmt: skip
        self.process = ManagedProcess(
            "freetakserver", argv, log_path=self.root_dir / "fts.log", env=env, cwd=data
        ).start()
        deadline = time.monotonic() + timeout
        for port in (COT_TCP_PORT, COT_TLS_PORT):
            self.process.wait_until(
                lambda port=port: _accepts(self.address, port),
                max(1.0, deadline - time.monotonic()),
                what=f"FreeTAKServer port {port}",
            )
        # Its TLS port listens before its TLS service accepts: a handshake hangs until then.
        self.process.wait_until(
            self._tls_handshake_completes,
            max(1.0, deadline - time.monotonic()),
            what="FreeTAKServer TLS handshakes",
        )
        return self

    def _tls_handshake_completes(self) -> bool:
        client = self.pki.client("forwarder")
        context = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        context.load_cert_chain(str(client.cert), str(client.key))
        try:
            with (
                socket.create_connection((self.address, COT_TLS_PORT), timeout=3) as raw,
                context.wrap_socket(raw, server_hostname=self.pki.server_name) as tls,
            ):
                tls.settimeout(0.2)
                with contextlib.suppress(TimeoutError, ssl.SSLError):
                    tls.recv(1)  # TLS 1.3: a rejected certificate shows on the first read
                return True
        except (OSError, ssl.SSLError):
            return False

    def _create_namespace(self) -> None:
        if self.address:
            return
        peer = f"{self._host_if}n"
        third, fourth = secrets.randbelow(250) + 1, secrets.randbelow(60) * 4
        host_ip, ns_ip = f"10.231.{third}.{fourth + 1}", f"10.231.{third}.{fourth + 2}"
        steps = [
            ["ip", "netns", "add", self.namespace],
            ["ip", "link", "add", self._host_if, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", self.namespace],
            ["ip", "addr", "add", f"{host_ip}/30", "dev", self._host_if],
            ["ip", "link", "set", self._host_if, "up"],
            ["ip", "-n", self.namespace, "addr", "add", f"{ns_ip}/30", "dev", peer],
            ["ip", "-n", self.namespace, "link", "set", peer, "up"],
            ["ip", "-n", self.namespace, "link", "set", "lo", "up"],
        ]
        try:
            for step in steps:
                _run(step, " ".join(step), timeout=10)
        except FtsUnavailable:
            self._delete_namespace()
            raise
        self.address = ns_ip

    def _delete_namespace(self) -> None:
        # Everything still inside (FreeTAKServer's worker processes) was started by us.
        with contextlib.suppress(FtsUnavailable, OSError):
            pids = subprocess.run(  # noqa: S603 (our own argv, no shell)  # nosec B603 # our own argv, no shell
                [shutil.which("ip") or "/usr/sbin/ip", "netns", "pids", self.namespace],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
        with contextlib.suppress(FtsUnavailable):
            _run(["ip", "link", "del", self._host_if], "delete the veth pair", timeout=10)
        with contextlib.suppress(FtsUnavailable):
            _run(["ip", "netns", "del", self.namespace], "delete the namespace", timeout=10)
        self.address = ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is not None:
            self.process.stop(timeout)
        self._delete_namespace()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


if __name__ == "__main__":  # `python -m detection_api.local.fts_server`: install only
    print(ensure_fts(), file=sys.stderr)
