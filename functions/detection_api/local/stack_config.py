"""What ``detection-api up`` runs, decided from its options and the environment (local/stack.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from detection_api.local.checkout import repo_root
from detection_api.local.ports import LOOPBACK

DEFAULT_FUNCTION_PORT = 8080


class StackError(RuntimeError):
    """The stack cannot start (message meant for the person at the terminal)."""


@dataclass(frozen=True)
class StackConfig:
    data_dir: Path
    function_port: int
    local_tak: bool  # start taky here (no TAK_URL in the environment, no --no-tak)
    forwarder: bool  # start the forwarder (there is a TAK server to forward to)
    environ: Mapping[str, str]
    repo: Path

    @classmethod
    def from_options(
        cls,
        *,
        data_dir: str | Path,
        port: int | None,
        no_tak: bool,
        environ: Mapping[str, str] | None = None,
        repo: Path | None = None,
    ) -> StackConfig:
        environ = dict(os.environ if environ is None else environ)
        if port is None:
            try:
                port = int(environ.get("PORT") or DEFAULT_FUNCTION_PORT)
            except ValueError:
                raise StackError(f"PORT must be a number, not {environ['PORT']!r}") from None
        if not 0 < port < 65536:
            raise StackError(f"the function port must be 1..65535, not {port}")
        external_tak = bool(environ.get("TAK_URL"))
        return cls(
            data_dir=Path(data_dir).resolve(),
            function_port=port,
            local_tak=not external_tak and not no_tak,
            forwarder=external_tak or not no_tak,
            environ=environ,
            repo=(repo or repo_root()).resolve(),
        )

    @property
    def function_source(self) -> Path:
        return self.repo / "functions" / "main.py"

    @property
    def example_detection(self) -> Path:
        return self.repo / "examples" / "detection.json"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def function_url(self) -> str:
        return f"http://{LOOPBACK}:{self.function_port}/"
