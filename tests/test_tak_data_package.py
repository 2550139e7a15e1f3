"""TAK_DATA_PACKAGE and pytak's variable names: packages built here, as TAK Server hands them out
(a .pref, the client .p12, the truststore .p12), from a freshly generated PKI; the connection is
made to a real mutual-TLS server on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from detection_api.local.pki import PkiPaths
from detection_api.settings import Settings
from detection_api.tak.data_package import (
    DataPackageError,
    connection_settings,
    read_data_package,
)
from detection_api.tak.transport import ConfirmMode, Scheme, TakEndpoint, open_connection
from test_tak_transport import ScriptedTakServer, pki, server_context, start_server

__all__ = ["pki", "start_server"]  # fixtures shared with test_tak_transport

TRUST_PASSWORD = "trust-me"


def pref(connect: str, client_p12: str, client_password: str, *, truststore: bool) -> str:
    ca = (
        '<entry key="caLocation" class="class java.lang.String">cert/truststore-root.p12</entry>'
        f'<entry key="caPassword" class="class java.lang.String">{TRUST_PASSWORD}</entry>'
        if truststore
        else ""
    )
    return (
        "<?xml version='1.0' standalone='yes'?><preferences>"
        '<preference version="1" name="cot_streams">'
        '<entry key="count" class="class java.lang.Integer">1</entry>'
        '<entry key="description0" class="class java.lang.String">TAK</entry>'
        '<entry key="enabled0" class="class java.lang.Boolean">true</entry>'
        f'<entry key="connectString0" class="class java.lang.String">{connect}</entry>'
        "</preference>"
        '<preference version="1" name="com.atakmap.app_preferences">'
        f"{ca}"
        f'<entry key="clientPassword" class="class java.lang.String">{client_password}</entry>'
        '<entry key="certificateLocation" class="class java.lang.String">'
        f"cert/{client_p12}</entry>"
        "</preference></preferences>"
    )


def build_package(
    directory: Path,
    pki: PkiPaths,
    connect: str,
    *,
    truststore: bool = True,
    client_password: str | None = None,
) -> Path:
    client = pki.client("forwarder")
    path = directory / "tak-server.zip"
    trust = pkcs12.serialize_key_and_certificates(
        name=b"truststore",
        key=None,
        cert=None,
        cas=[x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())],
        encryption_algorithm=BestAvailableEncryption(TRUST_PASSWORD.encode()),
    )
    with zipfile.ZipFile(path, "w") as package:
        package.writestr("MANIFEST/manifest.xml", "<MissionPackageManifest version='2'/>")
        package.writestr(
            "cert/config.pref",
            pref(
                connect,
                "forwarder.p12",
                client_password or client.p12_password,
                truststore=truststore,
            ),
        )
        package.write(client.p12, "cert/forwarder.p12")
        if truststore:
            package.writestr("cert/truststore-root.p12", trust)
    return path


def test_a_data_package_gives_the_url_client_identity_and_truststore(
    tmp_path: Path, pki: PkiPaths, start_server: Callable[..., ScriptedTakServer]
) -> None:
    server = start_server(server_context(pki))
    package = build_package(tmp_path, pki, f"127.0.0.1:{server.port}:ssl")
    url, tls = connection_settings(Settings(tak_data_package=str(package)), tmp_path / "unpacked")
    assert TakEndpoint.parse(url) == TakEndpoint(Scheme.TLS, "127.0.0.1", server.port)
    assert tls.p12 and tls.ca and tls.p12_password == pki.client("forwarder").p12_password
    assert (Path(tls.ca).stat().st_mode & 0o777) == 0o600
    connection = open_connection(url, tls, confirm=ConfirmMode.PONG)
    connection.connect()  # mutual TLS, verified against the package's truststore
    seq = connection.send([])
    connection.wait_confirmed(seq, 5)
    connection.close()


def test_variables_set_in_the_environment_win_over_the_package(
    tmp_path: Path, pki: PkiPaths
) -> None:
    package = build_package(tmp_path, pki, "tak.example:8089:ssl")
    settings = Settings(
        tak_data_package=str(package),
        tak_url="tls://other.example:9999",
        tak_tls_ca=str(pki.ca.cert),
    )
    url, tls = connection_settings(settings, tmp_path / "unpacked")
    assert url == "tls://other.example:9999"
    assert tls.ca == str(pki.ca.cert)
    assert tls.p12 is not None  # the identity still comes from the package


def test_pytak_variable_names_are_aliases(monkeypatch: pytest.MonkeyPatch, pki: PkiPaths) -> None:
    client = pki.client("forwarder")
    monkeypatch.setenv("COT_URL", "tls://tak.example:8089")
    monkeypatch.setenv("PYTAK_TLS_CLIENT_CERT", str(client.cert))
    monkeypatch.setenv("PYTAK_TLS_CLIENT_KEY", str(client.key))
    monkeypatch.setenv("PYTAK_TLS_CLIENT_CAFILE", str(pki.ca.cert))
    monkeypatch.setenv("PYTAK_TLS_SERVER_EXPECTED_HOSTNAME", "localhost")
    settings = Settings()
    assert settings.tak_url == "tls://tak.example:8089"
    assert (settings.tak_tls_cert, settings.tak_tls_key) == (str(client.cert), str(client.key))
    assert settings.tak_tls_ca == str(pki.ca.cert)
    assert settings.tak_tls_server_name == "localhost"
    monkeypatch.setenv("TAK_URL", "tcp://ours.example:8087")  # ours win over pytak's
    assert Settings().tak_url == "tcp://ours.example:8087"


def test_a_package_without_truststore_uses_the_system_roots(tmp_path: Path, pki: PkiPaths) -> None:
    package = build_package(tmp_path, pki, "tak.example:8089:ssl", truststore=False)
    assert read_data_package(str(package), tmp_path / "unpacked").ca is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("not a zip", "File is not a zip file"),
        ("no pref", "*.pref"),
        ("bad connect string", "is not host:port:protocol"),
        ("wrong truststore password", "wrong caPassword"),
    ],
)
def test_a_bad_package_is_refused_with_a_reason(
    damage: str, message: str, tmp_path: Path, pki: PkiPaths
) -> None:
    path = build_package(tmp_path, pki, "tak.example:8089:ssl")
    if damage == "not a zip":
        path.write_bytes(b"PK nonsense")
    elif damage in ("no pref", "bad connect string", "wrong truststore password"):
        with zipfile.ZipFile(path) as old:
            files = {n: old.read(n) for n in old.namelist()}
        if damage == "no pref":
            files.pop("cert/config.pref")
        elif damage == "bad connect string":
            files["cert/config.pref"] = files["cert/config.pref"].replace(
                b"tak.example:8089:ssl", b"tak.example"
            )
        else:
            files["cert/config.pref"] = files["cert/config.pref"].replace(
                TRUST_PASSWORD.encode(), b"wrong"
            )
        with zipfile.ZipFile(path, "w") as new:
            for name, data in files.items():
                new.writestr(name, data)
    with pytest.raises(DataPackageError) as info:
        read_data_package(str(path), tmp_path / "unpacked")
    assert "TAK_DATA_PACKAGE" in str(info.value)
    assert message in str(info.value)


WORKER = str(Path(sys.executable).parent / "detection-api")


def test_the_worker_keeps_the_unpacked_package_while_it_runs_and_removes_it(
    tmp_path: Path, pki: PkiPaths, redis_server
) -> None:
    """The client identity unpacked from the package is not left behind in the temporary
    directory when the worker stops (it was, once per start, before)."""
    package = build_package(tmp_path, pki, "127.0.0.1:9:ssl")  # a TAK outage: fine for this
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TAK_DATA_PACKAGE": str(package), "REDIS_URL": redis_server.url, "TMPDIR": str(scratch)}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [WORKER, "worker"],
            env={**env, "PATH": "/usr/bin:/bin", "FORWARDER_METRICS_PORT": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Its loop has started (logged after the SIGTERM handler is installed; a SIGTERM before
        # it ends the process as any unhandled SIGTERM does, without clean-up).
        deadline = time.monotonic() + 30
        while b"batches of up to" not in log.read_bytes():
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        [unpacked] = scratch.glob("tak-data-package-*")
        assert list(unpacked.glob("cert/*.p12"))
        assert (unpacked.stat().st_mode & 0o777) == 0o700
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert not list(scratch.iterdir())


def test_the_worker_stops_at_start_naming_the_variable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [WORKER, "worker"],
        env={"TAK_DATA_PACKAGE": str(bad), "PATH": "/usr/bin:/bin", "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TAK_DATA_PACKAGE" in lines[0], result.stderr
    assert not list(scratch.iterdir())  # nothing unpacked is left behind
    result = subprocess.run(
        [WORKER, "worker"],
        env={"TAK_CONFIRM": "sometimes", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith(
        "detection-api worker: invalid configuration: TAK_CONFIRM"
    )
