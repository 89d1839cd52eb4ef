"""Running the ``hybridsearch`` command line in a subprocess, as a user does."""

from __future__ import annotations

import os
import subprocess
import sys


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without its HYBRIDSEARCH_ settings, pointed at
    ``database_url``, offline, with ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDSEARCH_")}
    env.update(HYBRIDSEARCH_DATABASE_URL=database_url, HF_HUB_OFFLINE="1", **extra)
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m hybridsearch.cli ARGS`` with ``env``; never raises on its exit status."""
    return subprocess.run(
        [sys.executable, "-m", "hybridsearch.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
