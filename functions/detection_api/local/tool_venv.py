"""Tools in virtualenvs of their own, installed on first use (taky, FreeTAKServer), and the
install steps' error reporting.

A tool whose pins cannot share the project's virtualenv (taky pins Flask 2; FreeTAKServer wants
Python 3.11 and old setuptools) lives in ``<repo>/.venv-<tool>``. A file lock keeps two processes
from installing at once; a stamp file naming the requirements makes later calls a no-op, and a
changed requirement reinstalls.
"""

from __future__ import annotations

import fcntl
import subprocess  # nosec B404 # creates virtualenvs and runs pip with our own argv
from collections.abc import Sequence
from pathlib import Path

STAMP_NAME = ".detection-api-installed"
INSTALL_TIMEOUT_S = 900
_TAIL_LINES = 20


def run_step(
    argv: Sequence[str],
    what: str,
    *,
    error: type[Exception],
    timeout: float = INSTALL_TIMEOUT_S,
    hint: str = "",
) -> None:
    """Run one step; if it fails, raise ``error`` naming ``what`` with the tail of its output."""
    try:
        result = subprocess.run(  # noqa: S603 (our own argv, no shell)  # nosec B603 # our own argv, no shell
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"could not {what}: {exc}{hint}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-_TAIL_LINES:])
        raise error(f"could not {what} (exit {result.returncode}):\n{tail}{hint}")


def _stamp_text(requirements: Sequence[str]) -> str:
    return "\n".join(requirements) + "\n"


def installed(venv_dir: Path, requirements: Sequence[str], executable: Path) -> bool:
    """True when ``venv_dir`` holds exactly ``requirements`` and ``executable`` exists."""
    try:
        stamped = (venv_dir / STAMP_NAME).read_text()
    except FileNotFoundError:
        return False
    return stamped == _stamp_text(requirements) and executable.is_file()


def ensure_tool_venv(
    venv_dir: Path,
    requirements: Sequence[str],
    executable: Path,
    *,
    base_python: str,
    tool: str,
    error: type[Exception],
    hint: str = "",
) -> None:
    """Create ``venv_dir`` with ``base_python`` and pip-install ``requirements`` into it, unless
    that is done already; ``executable`` must exist afterwards. Failures raise ``error``."""
    if installed(venv_dir, requirements, executable):
        return
    venv_dir.mkdir(parents=True, exist_ok=True)
    with (venv_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing: wait for it
        if installed(venv_dir, requirements, executable):
            return
        stamp = venv_dir / STAMP_NAME
        stamp.unlink(missing_ok=True)
        run_step(
            [base_python, "-m", "venv", str(venv_dir)],
            f"create the virtualenv for {tool}",
            error=error,
            hint=hint,
        )
        run_step(
            [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", *requirements],
            f"pip install {' '.join(requirements)}",
            error=error,
            hint=hint,
        )  # fmt: skip
        if not executable.is_file():
            raise error(f"{' '.join(requirements)} installed but {executable} is missing")
        stamp.write_text(_stamp_text(requirements))
