"""``TAK_DATA_PACKAGE``: connect with the ``.zip`` a TAK Server admin hands out.

A TAK data package holds a preference file (``*.pref``: ``connectString0`` = ``host:port:ssl``,
``certificateLocation`` + ``clientPassword`` for the client ``.p12``, ``caLocation`` +
``caPassword`` for the truststore ``.p12``) and the two ``.p12`` files. pytak reads this format
(``pytak.functions.unzip_file``, ``find_file``, ``load_preferences``, ``find_cert``,
``connectString2url``); we use its readers rather than a parser of our own. pytak's
``read_pref_package`` itself is not used: it takes the CA from the client ``.p12`` and ignores
the truststore, and it checks with ``assert`` (gone under ``python -O``).

The package is unpacked once into a private directory (mode 0700) that its caller owns: the TLS
context is rebuilt from these files on every reconnect, so the worker keeps them for as long as
it runs and removes them when it exits (they hold the client's identity). The client ``.p12``
is used as it is (``TAK_TLS_P12``); the truststore's certificates become a PEM CA file. Values set
explicitly in the environment (``TAK_URL``, ``TAK_TLS_*``) win over the package's.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET  # nosec B405 # only for the ParseError type pytak raises
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

from detection_api.tak.endpoint import TlsFiles

if TYPE_CHECKING:
    from detection_api.settings import Settings

_CA_KEYS = ("caLocation", "caPassword")


class DataPackageError(ValueError):
    """The package is missing, unreadable or incomplete (the message says what)."""


@dataclass(frozen=True, slots=True)
class DataPackage:
    url: str  # tls://host:port (TAK_URL form)
    p12: str  # the client identity
    p12_password: str = field(repr=False)  # a secret: never in a repr
    ca: str | None  # PEM of the truststore's certificates, if the package has one


def read_data_package(path: str, workdir: Path) -> DataPackage:
    """Unpack ``path`` into ``workdir`` (created private if missing; the caller removes it) and
    read it; raises DataPackageError naming what is wrong."""
    if not Path(path).is_file():
        raise DataPackageError(f"TAK_DATA_PACKAGE {path!r} is not a file")
    with warnings.catch_warnings():  # pytak warns about optional extras we do not use
        warnings.simplefilter("ignore")
        from pytak.functions import (  # noqa: PLC0415 (only when a package is configured)
            connectString2url,
            find_file,
            load_preferences,
            unzip_file,
        )

    target = workdir
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    try:
        directory = unzip_file(path, str(target))
        pref_file = find_file(directory, "*.pref")
        prefs = load_preferences(pref_file, directory)
        truststore, ca_password = _truststore(pref_file, directory)
    except (zipfile.BadZipFile, EOFError, ET.ParseError, OSError, AssertionError) as exc:
        raise DataPackageError(f"TAK_DATA_PACKAGE {path!r}: {exc or type(exc).__name__}") from exc
    connect = prefs.get("connect_string") or ""
    if connect.count(":") != 2:
        raise DataPackageError(
            f"TAK_DATA_PACKAGE {path!r}: connectString0 {connect!r} is not host:port:protocol"
        )
    url = connectString2url(connect)
    cert = prefs.get("certificate_location")
    password = prefs.get("client_password")
    if url.startswith(("ssl://", "tls://")) and not (cert and password):
        raise DataPackageError(
            f"TAK_DATA_PACKAGE {path!r}: a TLS connection needs certificateLocation and "
            "clientPassword in the preference file"
        )
    ca = None
    if truststore is not None:
        ca = str(target / "truststore-ca.pem")
        _truststore_to_pem(Path(truststore), ca_password, Path(ca), path)
    return DataPackage(url=url, p12=cert or "", p12_password=password or "", ca=ca)


def _truststore(pref_file: str, directory: str) -> tuple[str | None, str | None]:
    """``caLocation`` (found inside the package) and ``caPassword``, read like pytak reads the
    client certificate's entries."""
    from pytak.functions import find_cert  # noqa: PLC0415 (imported by read_data_package)

    values: dict[str, str] = {}
    for entry in ET.parse(pref_file).getroot().iter("entry"):  # noqa: S314  # nosec B314 # the operator's own file; expat resolves no external entities
        key = entry.get("key")
        if key in _CA_KEYS and entry.text:
            values[key] = entry.text
    location = values.get("caLocation")
    if not location:
        return None, None
    return find_cert(directory, location), values.get("caPassword")


def _truststore_to_pem(p12: Path, password: str | None, out: Path, package: str) -> None:
    try:
        _key, cert, extra = pkcs12.load_key_and_certificates(
            p12.read_bytes(), password.encode() if password else None
        )
    except ValueError as exc:
        raise DataPackageError(
            f"TAK_DATA_PACKAGE {package!r}: cannot open the truststore (wrong caPassword?)"
        ) from exc
    certs = [c for c in (cert, *(extra or ())) if c is not None]
    if not certs:
        raise DataPackageError(f"TAK_DATA_PACKAGE {package!r}: the truststore holds no certificate")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"".join(c.public_bytes(Encoding.PEM) for c in certs))


def connection_settings(settings: Settings, workdir: Path | None) -> tuple[str, TlsFiles]:
    """``TAK_URL`` and the TLS files, from the environment and ``TAK_DATA_PACKAGE``: the package
    fills in what the environment does not set (raises DataPackageError). A package is unpacked
    into ``workdir``, which must outlive the connection (``read_data_package``); without a
    package none is needed."""
    tls = TlsFiles.from_settings(settings)
    if not settings.tak_data_package:
        return settings.tak_url, tls
    if workdir is None:
        raise TypeError("TAK_DATA_PACKAGE is set: connection_settings needs a workdir")
    package = read_data_package(settings.tak_data_package, workdir)
    explicit = settings.model_fields_set
    url = settings.tak_url if "tak_url" in explicit else package.url
    if not explicit & {"tak_tls_cert", "tak_tls_key", "tak_tls_p12"}:
        tls = replace(tls, cert=None, key=None, p12=package.p12, p12_password=package.p12_password)
    if "tak_tls_ca" not in explicit and package.ca:
        tls = replace(tls, ca=package.ca)
    return url, tls
