"""Running the command as a user does: a process of its own, with an environment."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``cloudlink-gateway ARGS`` (as ``python -m gateway``), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """The JSON a command printed, once it exited 0."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
