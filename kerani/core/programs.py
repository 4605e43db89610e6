"""The one place Kerani starts external programs: timeouts, typed errors, checked output."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from kerani.core.errors import ExternalProgramError, MissingDependencyError


def require_program(name: str, package: str) -> str:
    """Return the path of program `name`, or raise naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(
            f"'{name}' is not installed; install the Debian package '{package}' "
            "(scripts/bootstrap.sh does this)"
        )
    return path


def run(
    args: Sequence[str], *, timeout: float, input_bytes: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a program and return its completed process; raise ExternalProgramError on failure."""
    program = args[0]
    try:
        proc = subprocess.run(
            list(args), input=input_bytes, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise ExternalProgramError(f"{program} did not finish within {timeout:.0f} s") from e
    except OSError as e:
        raise ExternalProgramError(f"{program} could not be started: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = err[-1] if err else "no message"
        raise ExternalProgramError(f"{program} exited with code {proc.returncode}: {tail}")
    return proc
