"""Shared helpers: the replay run in this process (fast), or as the `pamgate` command (for stderr and exit)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pamgate.cli import parser
from tests.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "conformance" / "scenarios"
SCENARIO_NAMES = sorted(p.name for p in SCENARIOS.iterdir() if (p / "expect.yaml").is_file())


def scenario_args(name: str, *extra) -> list[str]:
    return ["replay", str(SCENARIOS / name), "--expect", str(SCENARIOS / name / "expect.yaml"), *extra]


def execute(argv):
    """The replay as `pamgate` runs it, returning what it found (the Run) rather than only the exit code."""
    from conformance.replay import execute as run
    return run(parser().parse_args(argv))


def command(argv, cwd=ROOT, timeout=120) -> subprocess.CompletedProcess:
    """`pamgate ...` in a child process: the real exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "pamgate.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def server(tmp_path):
    from tests.serving import Server
    s = Server(tmp_path).start()
    yield s
    s.stop()
